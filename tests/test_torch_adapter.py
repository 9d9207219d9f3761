"""backends.torch: a drop-in torch.optim.Adam / AdamW stepped by our backends.

Against torch.optim itself (within float32 rounding), against our NumPy-level Adam (bit
for bit), state dicts both ways, param groups and schedules, and every refused input
named and refused before anything changes."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")

from backends import Adam as NumpyLevelAdam  # noqa: E402
from backends.torch import Adam, AdamW  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::backends.AutoFallbackWarning")

CPU_BACKENDS = ["numba", "numpy", "python"]
SHAPES = [(5, 3), (7,), (1,), (40000,)]  # 40000: more than one chunk of the table kernel
OPTIONS = {"plain": {}, "l2": {"weight_decay": 0.1}, "amsgrad": {"amsgrad": True},
           "maximize": {"maximize": True, "weight_decay": 0.05}}


def _params(seed=0, dtype=torch.float32, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


def _grads(params, seed):
    g = torch.Generator().manual_seed(1000 + seed)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def _train(opt, params, steps, seed=0, scheduler=None, new_grads=True):
    """``steps`` steps with seeded gradients (new tensors each step, or copied into the
    same ones)."""
    for s in range(seed, seed + steps):
        for p, g in zip(params, _grads(params, s)):
            if new_grads or p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)
        opt.step()
        if scheduler is not None:
            scheduler.step()


def _assert_close(ours, theirs, steps):
    """Within float32 rounding carried over ``steps`` steps (Adam moves each element by
    about lr per step; its rounding is a few ulp of that and of the param)."""
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=4e-6 * steps, atol=1e-6 * steps)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("cls, torch_cls", [(Adam, torch.optim.Adam),
                                            (AdamW, torch.optim.AdamW)], ids=["Adam", "AdamW"])
def test_steps_as_torch_optim_does(backend, options, cls, torch_cls):
    shapes = SHAPES if backend != "python" else SHAPES[:3]  # pure Python is slow
    ours, theirs = _params(shapes=shapes), _params(shapes=shapes)
    kw = {"lr": 1e-2, **OPTIONS[options]}
    _train(cls(ours, backend=backend, **kw), ours, 4)
    _train(torch_cls(theirs, **kw), theirs, 4)
    _assert_close(ours, theirs, 4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", ["plain", "amsgrad", "maximize"])
def test_bit_identical_to_the_numpy_level_adam(backend, dtype, options):
    shapes = [(3, 4), (50,), (9000,)]
    ours = _params(dtype=dtype, shapes=shapes)
    arrays = [p.numpy().copy() for p in ours]
    opt = Adam(ours, lr=3e-2, backend=backend, **OPTIONS[options])
    numpy_level = NumpyLevelAdam(arrays, backend=backend, lr=3e-2, **OPTIONS[options])
    for s in range(3):
        grads = _grads(ours, s)
        for p, g in zip(ours, grads):
            p.grad = g
        opt.step()
        numpy_level.step([g.numpy() for g in grads])
    for p, a in zip(ours, arrays):
        assert np.array_equal(p.numpy(), a)
    moments = numpy_level.state.to_dict()
    for j, p in enumerate(ours):
        assert np.array_equal(opt.state[p]["exp_avg"].numpy(), moments["exp_avg"][j])
        assert np.array_equal(opt.state[p]["exp_avg_sq"].numpy(), moments["exp_avg_sq"][j])


def test_groups_schedules_and_tensor_lr_as_torch():
    """Per-group hyperparameters (no decay on the small tensors), a LambdaLR schedule
    changing every group's lr between steps, and a 0-d tensor lr in a third group."""
    def groups(params):
        return [{"params": params[:2], "weight_decay": 0.0},
                {"params": params[2:3], "lr": 5e-3, "betas": (0.8, 0.99), "amsgrad": True},
                {"params": params[3:], "lr": torch.tensor(2e-2)}]

    ours, theirs = _params(), _params()
    opt = AdamW(groups(ours), lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW(groups(theirs), lr=1e-2, weight_decay=0.1)
    schedule = lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1.0 / (1 + k))
    _train(opt, ours, 5, scheduler=schedule(opt))
    _train(ref, theirs, 5, scheduler=schedule(ref))
    _assert_close(ours, theirs, 5)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref.param_groups]


def test_params_without_grad_are_skipped_with_no_state_and_catch_up_as_torch():
    ours, theirs = _params(), _params()
    opt, ref = Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)
    for s in range(4):
        for params in (ours, theirs):
            for j, (p, g) in enumerate(zip(params, _grads(params, s))):
                p.grad = None if (j == 1 and s < 2) or (j == 2 and s == 2) else g
        opt.step()
        ref.step()
        if s < 2:
            assert ours[1] not in opt.state
    _assert_close(ours, theirs, 4)
    assert [float(opt.state[p]["step"]) for p in ours] == [4.0, 2.0, 3.0, 4.0]


def test_kept_grads_and_new_grads_step_alike():
    kept, new = _params(), _params()
    _train(Adam(kept, lr=1e-2), kept, 4, new_grads=False)
    _train(Adam(new, lr=1e-2), new, 4, new_grads=True)
    for a, b in zip(kept, new):
        assert torch.equal(a, b)


def test_step_counters_are_views_of_one_tensor():
    params = _params()
    opt = Adam(params)
    _train(opt, params, 2)
    steps = [opt.state[p]["step"] for p in params]
    assert all(s.dtype == torch.float32 and s.dim() == 0 for s in steps)
    assert len({s.untyped_storage().data_ptr() for s in steps}) == 1
    assert [float(s) for s in steps] == [2.0] * len(params)


def test_closure_loss_and_zero_grad():
    w = torch.nn.Parameter(torch.ones(3))
    opt = Adam([w], lr=0.1)
    loss = opt.step(lambda: (w * w).sum().backward() or (w * w).sum())
    assert loss.item() == 3.0 and torch.all(w < 1)
    opt.zero_grad()
    assert w.grad is None


def test_rebinding_param_data_is_followed():
    ours, theirs = _params(), _params()
    opt, ref = Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)
    _train(opt, ours, 2)
    _train(ref, theirs, 2)
    for p in ours + theirs:
        p.data = p.data.clone() * 2  # new storage
    _train(opt, ours, 2, seed=2)
    _train(ref, theirs, 2, seed=2)
    _assert_close(ours, theirs, 4)


def test_add_param_group_steps_the_new_group():
    ours, theirs = _params(), _params()
    opt, ref = Adam(ours[:2], lr=1e-2), torch.optim.Adam(theirs[:2], lr=1e-2)
    _train(opt, ours[:2], 1)
    _train(ref, theirs[:2], 1)
    opt.add_param_group({"params": ours[2:], "lr": 3e-2})
    ref.add_param_group({"params": theirs[2:], "lr": 3e-2})
    _train(opt, ours, 2, seed=1)
    _train(ref, theirs, 2, seed=1)
    _assert_close(ours, theirs, 3)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_a_torch_checkpoint_loads_and_continues_equal(amsgrad, tmp_path):
    ours, theirs = _params(), _params()
    ref = torch.optim.Adam(theirs, lr=1e-2, amsgrad=amsgrad)
    _train(ref, theirs, 3)
    torch.save(ref.state_dict(), tmp_path / "torch.pt")
    for a, b in zip(ours, theirs):
        a.data.copy_(b.data)
    opt = Adam(ours, lr=1e-2, amsgrad=amsgrad)
    opt.load_state_dict(torch.load(tmp_path / "torch.pt"))
    _train(opt, ours, 3, seed=3)
    _train(ref, theirs, 3, seed=3)
    _assert_close(ours, theirs, 6)
    assert float(opt.state[ours[0]]["step"]) == 6.0


@pytest.mark.parametrize("amsgrad", [False, True])
def test_our_checkpoint_loads_into_torch_and_continues_equal(amsgrad, tmp_path):
    ours, theirs = _params(), _params()
    opt = Adam(ours, lr=1e-2, amsgrad=amsgrad)
    ref = torch.optim.Adam(theirs, lr=1e-2, amsgrad=amsgrad)
    _train(opt, ours, 3)
    _train(ref, theirs, 3)
    ours_sd, torch_sd = opt.state_dict(), ref.state_dict()
    assert ours_sd["param_groups"] == torch_sd["param_groups"]
    assert {k: sorted(v) for k, v in ours_sd["state"].items()} == \
        {k: sorted(v) for k, v in torch_sd["state"].items()}
    torch.save(ours_sd, tmp_path / "ours.pt")
    resumed = [p.detach().clone() for p in ours]
    loaded = torch.optim.Adam(resumed, lr=1e-2, amsgrad=amsgrad)
    loaded.load_state_dict(torch.load(tmp_path / "ours.pt"))
    _train(loaded, resumed, 3, seed=3)
    _train(opt, ours, 3, seed=3)
    _assert_close(resumed, ours, 6)


def test_a_bad_checkpoint_is_refused_and_leaves_the_optimizer_as_it_was():
    params = _params()
    opt = Adam(params, lr=1e-2)
    _train(opt, params, 1)
    good = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(good)
    bad["state"][3]["exp_avg"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[3\].*shape"):
        opt.load_state_dict(bad)
    state = opt.state_dict()["state"]
    assert all(torch.equal(state[k]["exp_avg"], good["state"][k]["exp_avg"]) for k in state)
    _train(opt, params, 1, seed=1)  # still steps


def _sparse(p):
    return torch.zeros_like(p).to_sparse()


def _rebind_grad(p, new):
    p.grad.data = new  # past the .grad setter's checks


#: (what goes wrong, how: (params, j) -> None, error type, message)
BAD = [
    ("sparse grad", lambda ps, j: setattr(ps[j], "grad", _sparse(ps[j])), RuntimeError,
     "sparse"),
    ("grad of another shape", lambda ps, j: _rebind_grad(ps[j], torch.zeros(ps[j].numel() + 1)),
     ValueError, "shape"),
    ("grad of another dtype", lambda ps, j: _rebind_grad(ps[j], torch.zeros(
        ps[j].shape, dtype=torch.float64)), TypeError, "dtype"),
    ("non-contiguous grad", lambda ps, j: setattr(ps[j], "grad",
     torch.zeros(ps[j].shape[::-1]).t()), ValueError, "contiguous"),
    ("expanded grad", lambda ps, j: setattr(ps[j], "grad",
     torch.zeros(1).expand(ps[j].shape)), ValueError, "contiguous"),
    ("non-contiguous param", lambda ps, j: setattr(ps[j], "data",
     torch.zeros(ps[j].shape[::-1]).t()), ValueError, "contiguous"),
    ("complex param", lambda ps, j: setattr(ps[j], "data",
     torch.zeros(ps[j].shape, dtype=torch.complex64)), TypeError, "complex"),
    ("bfloat16 param with a float64 grad", lambda ps, j: (setattr(ps[j], "data", torch.zeros(
        ps[j].shape, dtype=torch.bfloat16)), _rebind_grad(ps[j], torch.zeros(
            ps[j].shape, dtype=torch.float64))), TypeError, "grad has dtype"),
    ("int16 param", lambda ps, j: setattr(ps[j], "data",
     torch.zeros(ps[j].shape, dtype=torch.int16)), TypeError, "dtype torch.int16"),
]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("what, spoil, error, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_named_and_refused_before_anything_changes(backend, what, spoil, error,
                                                                 message):
    first, second = _params(shapes=[(4, 3), (6,)]), _params(seed=1, shapes=[(3, 3), (2,)])
    opt = Adam([{"params": first}, {"params": second}], lr=1e-2, backend=backend)
    _train(opt, first + second, 1)
    for p, g in zip(first + second, _grads(first + second, 1)):
        p.grad = g
    spoil(second, 0)
    before = copy.deepcopy((first, [opt.state[p] for p in first]))
    with pytest.raises(error, match=message) as caught:
        opt.step()
    assert "param_groups[1]['params'][0]" in str(caught.value)
    assert all(torch.equal(a, b) for a, b in zip(first, before[0]))
    for state, old in zip([opt.state[p] for p in first], before[1]):
        assert all(torch.equal(state[k], old[k]) for k in old)


def test_bad_hyperparameters_are_named():
    params = _params()
    with pytest.raises(ValueError, match="Invalid lr"):
        Adam(params, lr=-1.0)
    with pytest.raises(ValueError, match=r"param_groups\[1\]: Invalid beta1"):
        Adam([{"params": params[:1]}, {"params": params[1:], "betas": (1.0, 0.9)}])
    opt = Adam(params)
    _train(opt, params, 1)
    before = [p.clone() for p in params]
    opt.param_groups[0]["lr"] = float("nan")  # as a schedule would set it
    with pytest.raises(ValueError, match=r"param_groups\[0\]: lr must be finite"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, before))
    with pytest.raises(ValueError, match="capturable"):
        Adam(params, capturable=True)


def test_auto_without_a_table_falls_back_to_the_built_in_order(tmp_path, monkeypatch):
    from backends import AutoFallbackWarning

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("ADAM_BACKENDS_TABLE", raising=False)
    params = _params()
    with pytest.warns(AutoFallbackWarning):
        opt = Adam(params, backend="auto")
    assert opt.backend.device == "cpu" and opt.choice is not None


def test_pickle_round_trip_keeps_stepping():
    import pickle

    params = _params()
    opt = Adam(params, lr=1e-2, backend="numpy")
    _train(opt, params, 1)
    clone = pickle.loads(pickle.dumps(opt))
    assert clone.backend.name == "numpy"
    clone_params = [p for g in clone.param_groups for p in g["params"]]
    _train(clone, clone_params, 1, seed=1)
    _train(opt, params, 1, seed=1)
    for a, b in zip(params, clone_params):
        assert torch.equal(a, b)


def test_step_hooks_run_as_in_torch():
    """Our step skips torch's wrapper when nothing needs it: hooks registered on the
    optimizer or globally still run, around the step, as torch runs them."""
    from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                       register_optimizer_step_pre_hook)

    params = _params()
    opt = Adam(params, lr=1e-2)
    calls = []
    seen = lambda tag: lambda o, args, kwargs: calls.append((tag, o is opt, float(
        opt.state[params[0]]["step"]) if params[0] in opt.state else 0.0))
    handles = [opt.register_step_pre_hook(seen("pre")),
               opt.register_step_post_hook(seen("post"))]
    _train(opt, params, 1)
    assert calls == [("pre", True, 0.0), ("post", True, 1.0)]
    for h in handles:
        h.remove()
    calls.clear()
    handles = [register_optimizer_step_pre_hook(seen("global pre")),
               register_optimizer_step_post_hook(seen("global post"))]
    try:
        _train(opt, params, 1, seed=1)
    finally:
        for h in handles:
            h.remove()
    assert calls == [("global pre", True, 1.0), ("global post", True, 2.0)]
    calls.clear()
    _train(opt, params, 1, seed=2)
    assert calls == []


def test_the_profiler_sees_the_step_as_torch_names_it():
    params = _params()
    opt = Adam(params, lr=1e-2)
    _train(opt, params, 1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _train(opt, params, 1, seed=1)
    assert "Optimizer.step#Adam.step" in {e.name for e in prof.events()}
    assert float(opt.state[params[0]]["step"]) == 2.0
