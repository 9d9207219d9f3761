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
