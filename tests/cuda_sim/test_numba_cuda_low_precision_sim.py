"""The Numba CUDA low-precision kernel under the CUDA simulator: the same bits as the
NumPy backend (params, moments, master weights, compensation) for every format, with
NaN and inf grads, float32 grads and a per-step learning rate. The simulator runs a
Python thread per GPU thread, so problems are a few hundred elements and three steps.
"""
import numpy as np
import pytest

from backends import AdamConfig, get_backend
from backends.formats import BFLOAT16

#: (name, params dtype, config options): every format the step takes.
FORMATS = [
    ("bf16", BFLOAT16, {}),
    ("bf16-bf16state", BFLOAT16, {"state_dtype": "bfloat16", "maximize": True}),
    ("bf16-sr", BFLOAT16, {"rounding": "stochastic", "seed": 7, "state_dtype": "bfloat16"}),
    ("bf16-kahan", BFLOAT16, {"rounding": "kahan", "state_dtype": "bfloat16",
                              "weight_decay": 0.1, "decoupled": True}),
    ("bf16-master", BFLOAT16, {"master_weights": True, "weight_decay": 0.1}),
    ("fp16", np.float16, {"state_dtype": "float32"}),
    ("fp16-kahan", np.float16, {"rounding": "kahan", "state_dtype": "float32"}),
    ("fp16-master", np.float16, {"master_weights": True, "amsgrad": True}),
    ("fp32-bf16state", np.float32, {"state_dtype": "bfloat16", "weight_decay": 0.1,
                                    "amsgrad": True}),
]
_FIELDS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "master_params", "compensation")


def _problem(dtype, grad_dtype, steps=3, seed=0):
    """Two tensors (200 and 15 elements) and their grads: NaN, inf, -inf and 0 among them;
    float32 grads also a NaN whose payload would show if a rounding dropped it."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(dtype) for n in (200, 15)]
    grads = [[rng.standard_normal(p.shape).astype(grad_dtype) for p in params]
             for _ in range(steps)]
    grads[0][0][:4] = [np.nan, np.inf, -np.inf, 0]
    if grads[0][0].dtype == np.float32:
        grads[0][0].view(np.uint32)[4] = 0x7FFFFFFF
    return params, grads


def _run(backend, dtype, options, grad_dtype):
    """Bytes of params and every state field after three steps at lrs 1e-2, 3e-3, 1e-3."""
    params, grads = _problem(dtype, grad_dtype)
    params = [backend.asarray(p) for p in params]
    cfg = AdamConfig(lr=1e-2, **options)
    state = backend.init_state(params, cfg)
    for g, lr in zip(grads, (1e-2, 3e-3, 1e-3)):
        backend.step(params, [backend.asarray(x) for x in g], state, cfg, lr=lr)
    out = params + [a for name in _FIELDS for a in getattr(state, name) or ()]
    return [np.ascontiguousarray(backend.to_numpy(a)).view(np.uint8).copy() for a in out]


#: Each format with grads of the params' dtype, and three with float32 grads.
CASES = [(*f, f[1]) for f in FORMATS] + [(*f, np.float32) for f in FORMATS
                                         if f[0] in ("bf16", "bf16-sr", "fp16-master")]


@pytest.mark.parametrize("name, dtype, options, grad_dtype", CASES,
                         ids=[f"{c[0]}-{np.dtype(c[3]).name}-grads" for c in CASES])
def test_bits_equal_numpy(name, dtype, options, grad_dtype):
    expected = _run(get_backend("numpy"), dtype, options, grad_dtype)
    found = _run(get_backend("numba-cuda"), dtype, options, grad_dtype)
    assert len(found) == len(expected)
    for i, (a, b) in enumerate(zip(found, expected)):
        np.testing.assert_array_equal(a, b, err_msg=f"{name}: array {i}")
