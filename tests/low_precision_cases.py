"""Every low-precision format stepped on a backend, for the GPU backends' tests (the CUDA
simulator's and a real GPU's): the bytes of params and every state field, NaNs made one
pattern per format (a GPU writes its canonical NaN where x86 keeps an operand's payload)."""
import numpy as np

from backends import AdamConfig
from backends.formats import BFLOAT16

#: (name, params dtype, config options): every format the step takes, each rounding,
#: amsgrad, maximize, L2 and decoupled decay among them.
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
#: Learning rate of each step (a per-step lr: the schedule's).
LRS = (1e-2, 3e-3, 1e-3)
_FIELDS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "master_params", "compensation")
#: Bits of the magnitude above which a value is a NaN, by (itemsize, is bfloat16).
_NAN_ABOVE = {(4, False): 0x7F800000, (2, True): 0x7F80, (2, False): 0x7C00}


def problem(dtype, grad_dtype, sizes, seed=0):
    """Params of ``sizes`` and grads for each of LRS: NaN, inf, -inf and 0 among them;
    float32 grads also a NaN whose payload would show if a rounding dropped it."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [[rng.standard_normal(p.shape).astype(grad_dtype) for p in params] for _ in LRS]
    grads[0][0][:4] = [np.nan, np.inf, -np.inf, 0]
    if grads[0][0].dtype == np.float32:
        grads[0][0].view(np.uint32)[4] = 0x7FFFFFFF
    return params, grads


def stepped_bits(backend, dtype, options, grad_dtype, sizes) -> list:
    """``canonical_bits`` of params and every state field after a step at each of LRS."""
    params, grads = problem(dtype, grad_dtype, sizes)
    params = [backend.asarray(p) for p in params]
    cfg = AdamConfig(lr=LRS[0], **options)
    state = backend.init_state(params, cfg)
    for g, lr in zip(grads, LRS):
        backend.step(params, [backend.asarray(x) for x in g], state, cfg, lr=lr)
    out = params + [a for name in _FIELDS for a in getattr(state, name) or ()]
    return [canonical_bits(backend.to_numpy(a)) for a in out]


def canonical_bits(a: np.ndarray) -> np.ndarray:
    """The unsigned-integer bits of a float array, every NaN as its format's all-ones NaN."""
    bits = np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}").copy()
    magnitude = (1 << (8 * a.dtype.itemsize - 1)) - 1
    nan_above = _NAN_ABOVE[(a.dtype.itemsize, a.dtype == BFLOAT16)]
    bits[(bits & magnitude) > nan_above] = magnitude
    return bits
