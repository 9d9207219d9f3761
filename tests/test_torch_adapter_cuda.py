"""backends.torch's Adam and AdamW on CUDA tensors, stepped zero-copy by numba-cuda and
cupy through ``__cuda_array_interface__``: torch.optim's results within float32 rounding,
with the params' own memory updated, a schedule's lr and a state dict torch loads. Needs a
CUDA build of torch and a GPU (``adam-bench gpu-report`` runs it there); elsewhere each
test is skipped with the reason (this project's machines hold torch's CPU build)."""
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")

import backends.torch as ours  # noqa: E402
from backends import list_backends  # noqa: E402

_ROWS = {r.name: r for r in list_backends()}
SHAPES = [(64, 33), (7,), (1000,)]


def _unavailable(name):
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (this machine's torch is the CPU build, or no GPU)"
    if not _ROWS[name].available:
        return f"{name} unavailable: {_ROWS[name].reason}"
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", ["Adam", "AdamW"])
@pytest.mark.parametrize("name", ["numba-cuda", "cupy"])
def test_cuda_tensors_step_in_place_as_torch_optim(name, optimizer):
    reason = _unavailable(name)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    params = [torch.randn(s, device="cuda", requires_grad=True) for s in SHAPES]
    twins = [p.detach().clone().requires_grad_() for p in params]
    pointers = [p.data_ptr() for p in params]
    options = {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}
    opt = getattr(ours, optimizer)(params, backend=name, **options)
    reference = getattr(torch.optim, optimizer)(twins, **options)
    for step in range(6):
        for p, q in zip(params, twins):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g
        opt.step()
        reference.step()
        if step == 2:  # a schedule: the next steps read the group's new lr
            opt.param_groups[0]["lr"] = reference.param_groups[0]["lr"] = 1e-3
    for p, q, pointer in zip(params, twins, pointers):
        assert p.data_ptr() == pointer  # stepped in its own memory, no copy
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    loaded = getattr(torch.optim, optimizer)(twins, **options)
    loaded.load_state_dict(opt.state_dict())
    for p, q in zip(params, twins):
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            torch.testing.assert_close(loaded.state[q][key], reference.state[q][key],
                                       rtol=1e-5, atol=1e-7)


#: Training formats on CUDA tensors, each against the same optimizer on CPU tensors.
CUDA_FORMATS = {"bf16 stochastic": (torch.bfloat16, {"rounding": "stochastic", "seed": 3,
                                                     "state_dtype": "bfloat16"}),
                "bf16 master": (torch.bfloat16, {"master_weights": True}),
                "fp16 kahan": (torch.float16, {"rounding": "kahan"})}


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(CUDA_FORMATS))
@pytest.mark.parametrize("name", ["numba-cuda", "cupy"])
def test_low_precision_cuda_tensors_step_as_the_cpu_does(name, case):
    """bfloat16 and float16 CUDA params (bfloat16 viewed through its int16 bits: torch's
    ``__cuda_array_interface__`` has no bfloat16) step in their own memory to the NumPy
    backend's bits on CPU twins, after a schedule's lr change."""
    reason = _unavailable(name)
    if reason:
        pytest.skip(reason)
    dtype, options = CUDA_FORMATS[case]
    torch.manual_seed(1)
    params = [torch.randn(s, device="cuda").to(dtype).requires_grad_() for s in SHAPES]
    twins = [p.detach().cpu().requires_grad_() for p in params]
    pointers = [p.data_ptr() for p in params]
    opt = ours.Adam(params, backend=name, lr=1e-2, **options)
    reference = ours.Adam(twins, backend="numpy", lr=1e-2, **options)
    for step in range(4):
        for p, q in zip(params, twins):
            g = (torch.randn(p.shape) * 1e-2).to(dtype)
            p.grad, q.grad = g.to("cuda"), g
        opt.step()
        reference.step()
        if step == 1:
            opt.param_groups[0]["lr"] = reference.param_groups[0]["lr"] = 1e-3
    for p, q, pointer in zip(params, twins, pointers):
        assert p.data_ptr() == pointer
        assert torch.equal(p.detach().cpu().view(torch.int16), q.detach().view(torch.int16))


def test_a_bfloat16_cuda_tensor_is_viewed_through_its_int16_bits(monkeypatch):
    """Without a GPU: the CUDA view of a bfloat16 tensor asks the device library for an
    int16 view and reinterprets it as bfloat16 (a stand-in library that, like torch's
    ``__cuda_array_interface__``, knows no bfloat16 sees only int16); other dtypes go as
    they are."""
    import numpy as np

    from backends import _torch_tensors
    from backends.cuda import device
    from backends.formats import BFLOAT16

    asked = []

    def stand_in(obj, array_type):
        asked.append(obj.dtype)
        return obj.numpy()  # raises for bfloat16, as torch's interface does

    monkeypatch.setattr(device, "device_array_view", stand_in)
    cuda_backend = type("CudaStandIn", (), {"device": "cuda", "array_type": np.ndarray,
                                             "name": "stand-in"})()
    t = torch.randn(7).to(torch.bfloat16)
    view = _torch_tensors.array_view(t, cuda_backend)
    assert view.dtype == BFLOAT16 and asked == [torch.int16]
    assert np.array_equal(view.view(np.int16), t.view(torch.int16).numpy())
    half = torch.randn(5).to(torch.float16)
    assert _torch_tensors.array_view(half, cuda_backend).dtype == np.float16
    assert asked == [torch.int16, torch.float16]
