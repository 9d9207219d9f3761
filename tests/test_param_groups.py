"""Param groups and schedules in ``Adam``: each group steps as its own Adam would, in one
dispatch; bad groups are refused naming the group and key; state dicts and files carry
the groups and resume bit for bit on any backend; old ones still load."""
import math

import numpy as np
import pytest

from backends import Adam, AdamConfig, get_backend

SHAPES = [(6, 4), (5,), (4100,), (3,)]  # 4100: int8 codes under state_dtype='int8'
GROUPS = [{"weight_decay": 0.1}, {"lr": 3e-2, "amsgrad": True}]
DEFAULTS = {"lr": 1e-2, "weight_decay": 0.0, "decoupled": True}
CPU = ["python", "numpy", "numba"]


def tensors(seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def grads(t, dtype="float32"):
    return tensors(100 + t, dtype)


def grouped(params, **extra):
    return [{"params": params[:2], **GROUPS[0], **extra},
            {"params": params[2:], **GROUPS[1], **extra}]


def same(a, b) -> bool:
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("state_dtype", [None, "int8"])
def test_each_group_steps_as_its_own_adam(backend, state_dtype):
    params, alone = tensors(), tensors()
    opt = Adam(grouped(params), backend=backend, state_dtype=state_dtype, **DEFAULTS)
    single = [Adam(alone[:2], backend=backend, state_dtype=state_dtype,
                   **{**DEFAULTS, **GROUPS[0]}),
              Adam(alone[2:], backend=backend, state_dtype=state_dtype,
                   **{**DEFAULTS, **GROUPS[1]})]
    for t in range(3):
        g = grads(t)
        opt.step(g)
        single[0].step(g[:2])
        single[1].step(g[2:])
    assert same(params, alone)
    assert opt.params == params[:2] + params[2:] and [s.step for s in opt.states] == [3, 3]
    assert not np.array_equal(params[0], tensors()[0])


def test_a_plain_list_is_one_group_as_before():
    params = tensors()
    opt = Adam(params, backend="numpy", **DEFAULTS)
    opt.step(grads(0))
    assert opt.config == AdamConfig(**DEFAULTS) and opt.state is opt.states[0]
    d = opt.state_dict()
    assert d["config"] == AdamConfig(**DEFAULTS).to_dict() and isinstance(d["state"], dict)
    assert d["param_groups"] == [{**AdamConfig(**DEFAULTS).to_dict(), "params": [0, 1, 2, 3]}]
    several = Adam(grouped(tensors()), backend="numpy")
    with pytest.raises(AttributeError, match=r"Adam.config belongs to an Adam of one param "
                                             "group; this one has 2"):
        several.config


def test_each_group_is_one_numba_dispatch(monkeypatch):
    backend = get_backend("numba")
    calls = []
    real = backend._update
    monkeypatch.setattr(backend, "_update",
                        lambda params, *a, **k: calls.append(len(params)) or real(params, *a, **k))
    params = tensors()
    Adam(grouped(params), backend=backend).step(grads(0))
    assert calls == [2, 2]


def cosine_with_warmup(t, base, warmup=2, total=6):
    if t < warmup:
        return base * (t + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


@pytest.mark.parametrize("backend", CPU)
def test_a_schedule_through_the_group_dicts(backend):
    """Setting each group's "lr" before each step gives the bits of Adams made with that
    lr, and re-checks no array (the validation records stay)."""
    params, fresh = tensors(), tensors()
    opt = Adam(grouped(params), backend=backend, **DEFAULTS)
    base = [g["lr"] for g in opt.param_groups]
    states, g = None, grads(0)
    for t in range(6):
        for group, lr in zip(opt.param_groups, base):
            group["lr"] = cosine_with_warmup(t, lr)
        for a, b in zip(g, grads(t)):  # the same grad arrays: a training loop's buffers
            a[...] = b
        opt.step(g)
        records = [s.cache["validated"] for s in opt.states]
        assert states is None or all(a is b for a, b in zip(records, states))
        states = records
        reference = [Adam(fresh[:2], backend=backend, **{**DEFAULTS, **GROUPS[0],
                                                        "lr": cosine_with_warmup(t, base[0])}),
                     Adam(fresh[2:], backend=backend, **{**DEFAULTS, **GROUPS[1],
                                                        "lr": cosine_with_warmup(t, base[1])})]
        if t:
            for r, s in zip(reference, saved):
                r.load_state_dict({"config": r.config.to_dict(), "state": s})
        reference[0].step(g[:2])
        reference[1].step(g[2:])
        saved = [r.state.to_dict() for r in reference]
    assert same(params, fresh)


def test_step_lr_sets_every_group_or_one_each():
    params = tensors()
    opt = Adam(grouped(params), backend="numpy", **DEFAULTS)
    opt.step(grads(0), lr=5e-3)
    assert [g["lr"] for g in opt.param_groups] == [5e-3, 5e-3]
    opt.step(grads(1), lr=[1e-3, 2e-3])
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 2e-3]
    before = [p.copy() for p in params]
    opt.step(grads(2), lr=0.0)  # this very step at lr 0: nothing moves
    assert same(params, before) and [s.step for s in opt.states] == [3, 3]


def snapshot(opt):
    return ([p.copy() for p in opt.params], [s.to_dict() for s in opt.states],
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])


def unchanged(before, opt) -> bool:
    params, states, dicts = before
    now = snapshot(opt)
    flat = lambda ss: [a for s in ss for k in ("exp_avg", "exp_avg_sq") for a in s[k]]
    return (same(params, now[0]) and same(flat(states), flat(now[1]))
            and [s["step"] for s in states] == [s["step"] for s in now[1]] and dicts == now[2])


@pytest.mark.parametrize("groups, error, match", [
    (lambda p: [{"params": p[:2]}, {"lr": 1e-3}], ValueError,
     r"param_groups\[1\] lacks 'params'"),
    (lambda p: [{"params": p[:2]}, {"params": p[2:], "betas": (0.9, 0.99)}], ValueError,
     r"param_groups\[1\] has unknown key 'betas'.*beta1 and beta2"),
    (lambda p: [{"params": p[:2]}, {"params": p[2:] + p[:1]}], ValueError,
     r"param_groups\[1\]\['params'\]\[2\] is already in a param group"),
    (lambda p: [{"params": p[:2]}, {"params": p[2:], "lr": -1}], ValueError,
     r"param_groups\[1\]\['lr'\]: Invalid lr: -1"),
    (lambda p: [{"params": p[:2]}, {"params": p[2:], "beta2": 1.0}], ValueError,
     r"param_groups\[1\]\['beta2'\]: Invalid beta2: 1.0"),
    (lambda p: [{"params": p[:2]}, {"params": p[2:], "amsgrad": 1}], TypeError,
     r"param_groups\[1\]\['amsgrad'\]: amsgrad must be a bool"),
    (lambda p: [{"params": p[:2]}, {"params": p[2:], "state_dtype": "int4"}], ValueError,
     r"param_groups\[1\]\['state_dtype'\]: Invalid state_dtype"),
    (lambda p: [{"params": p[:2]}, {"params": 3}], TypeError,
     r"param_groups\[1\]\['params'\] must be an array or a sequence of arrays, got int"),
])
def test_bad_groups_are_refused_naming_the_group_and_key(groups, error, match):
    params = tensors()
    with pytest.raises(error, match=match):
        Adam(groups(params), backend="numpy")
    assert same(params, tensors())


@pytest.mark.parametrize("spoil, error, match", [
    (lambda opt: opt.param_groups[1].__setitem__("lr", float("nan")), ValueError,
     r"param_groups\[1\]: lr must be finite"),
    (lambda opt: opt.param_groups[1].__setitem__("eps", 0.0), ValueError,
     r"param_groups\[1\]\['eps'\]: Invalid eps"),
    (lambda opt: opt.param_groups[1].pop("beta1"), ValueError,
     r"param_groups\[1\] lacks 'beta1'"),
    (lambda opt: opt.param_groups[1]["params"].append(np.zeros(2, np.float32)), ValueError,
     r"param_groups\[1\]\['params'\] was changed"),
])
def test_a_group_spoiled_between_steps_changes_nothing(spoil, error, match):
    opt = Adam(grouped(tensors()), backend="numba", **DEFAULTS)
    opt.step(grads(0))
    spoil(opt)
    before = snapshot(opt)
    with pytest.raises(error, match=match):
        opt.step(grads(1))
    assert unchanged(before, opt)


def test_bad_grads_or_lr_of_a_later_group_change_no_group():
    opt = Adam(grouped(tensors()), backend="numba", **DEFAULTS)
    opt.step(grads(0))
    before = snapshot(opt)
    bad = grads(1)
    bad[3] = bad[3][:2]
    with pytest.raises(ValueError, match=r"param_groups\[1\]: grads\[1\] has shape \(2,\)"):
        opt.step(bad)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['lr'\]: Invalid lr"):
        opt.step(grads(1), lr=[1e-3, -1.0])
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['lr'\]: Invalid lr"):
        opt.step(bad, lr=[1e-3, -1.0])
    assert unchanged(before, opt)


@pytest.mark.parametrize("how", ["state_dict", "file"])
@pytest.mark.parametrize("first, second", [("numba", "numpy"), ("numpy", "python"),
                                           ("python", "numba")])
@pytest.mark.parametrize("state_dtype", [None, "int8"])
def test_resume_on_any_backend_is_bit_for_bit(first, second, how, state_dtype, tmp_path):
    """3 steps on one backend, saved with a scheduled lr, 3 on another: the bits of
    stepping the groups' states straight through both backends."""
    params = tensors()
    opt = Adam(grouped(params, state_dtype=state_dtype), backend=first, **DEFAULTS)
    for t in range(3):
        opt.step(grads(t), lr=[1e-2 / (t + 1), 2e-2 / (t + 1)])
    if how == "file":
        opt.save(tmp_path / "adam.npz")
        resumed = Adam.load(tmp_path / "adam.npz", [p.copy() for p in params], backend=second)
    else:
        resumed = Adam(grouped([p.copy() for p in params]), backend=second)
        resumed.load_state_dict(opt.state_dict())
    assert [g["lr"] for g in resumed.param_groups] == [1e-2 / 3, 2e-2 / 3]
    assert [g["weight_decay"] for g in resumed.param_groups] == [0.1, 0.0]
    # the expectation: the same states handed over in memory, group by group
    be, cfgs = get_backend(second), [g.config for g in _each(opt)]
    states = [be.state_from_dict(s.to_dict()) for s in opt.states]
    for t in range(3, 6):
        g = grads(t)
        resumed.step(g)
        for i, (sl, c) in enumerate(zip((slice(0, 2), slice(2, 4)), cfgs)):
            be.step(params[sl], g[sl], states[i], c, lr=(1e-2 / 3, 2e-2 / 3)[i])
    assert same(resumed.params, params) and [s.step for s in resumed.states] == [6, 6]


def _each(opt):
    """One single-group view per group: its config at its current lr."""
    return [Adam(g["params"], backend=opt.backend,
                 **{k: v for k, v in g.items() if k != "params"}) for g in opt.param_groups]


@pytest.mark.parametrize("how", ["state_dict", "file"])
def test_old_state_dicts_and_files_without_groups_still_load(how, tmp_path):
    params = tensors()
    opt = Adam(params, backend="numpy", **DEFAULTS)
    opt.step(grads(0))
    old = opt.state_dict()
    del old["param_groups"]  # what Adam.state_dict() gave before groups
    if how == "file":
        from backends.checkpoint import write_checkpoint

        write_checkpoint(tmp_path / "old.npz", old)
        resumed = Adam.load(tmp_path / "old.npz", [p.copy() for p in params])
    else:
        resumed = Adam([p.copy() for p in params], backend="numpy")
        resumed.load_state_dict(old)
    assert resumed.config == AdamConfig(**DEFAULTS) and resumed.state.step == 1
    resumed.step(grads(1))
    opt.step(grads(1))
    assert same(resumed.params, params)


def test_a_state_dict_of_other_groups_is_refused_before_anything_changes():
    opt = Adam(grouped(tensors()), backend="numpy")
    opt.step(grads(0))
    other = Adam([{"params": tensors()[:1]}, {"params": tensors()[1:]}], backend="numpy")
    before = snapshot(opt)
    with pytest.raises(ValueError, match=r"param_groups\[0\] of the state dict holds other "
                                         r"tensors than this Adam's param_groups\[0\]"):
        opt.load_state_dict(other.state_dict())
    assert unchanged(before, opt)


def test_add_param_group_joins_with_fresh_state():
    params = tensors()
    opt = Adam(params[:2], backend="numpy", **DEFAULTS)
    opt.step(grads(0)[:2])
    opt.add_param_group({"params": params[2:], "lr": 0.0})
    opt.step(grads(1))
    assert [s.step for s in opt.states] == [2, 1] and same(params[2:], tensors()[2:])
    with pytest.raises(ValueError, match=r"param_groups\[2\]\['params'\]\[0\] is already in"):
        opt.add_param_group({"params": params[:1]})
