"""The per-step learning rate of the backend contract (``Backend.step(..., lr=...)``) and
the several-group step (``Backend.step_groups``): every backend honors the lr exactly as a
new config with that lr would, a bad lr is refused before anything changes, and a
schedule keeps the arrays' checks."""
import numpy as np
import pytest

from backends import AdamConfig
from backends.cuda._gpu import GpuBackend
from backends.cpu.numpy import NumpyBackend
from backends.scalars import StepScalars
from harness.check.bad_input import snapshot, unchanged

SHAPES = [(4100,), (3, 5), (1,)]  # 4100: int8 codes under int8 state; the others keep float32
LRS = [1e-3, 4e-3, 0.0, 2.5e-2, 2.5e-2]
OPTIONS = {"adamw": {"weight_decay": 0.1, "decoupled": True},
           "amsgrad-l2": {"weight_decay": 0.05, "amsgrad": True}}


def problem(dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in LRS]
    return params, grads


def run(backend, cfg_at, lr_at, state_dtype=None, dtype="float32"):
    """Params and state after len(LRS) steps with config ``cfg_at(t)`` and ``lr=lr_at(t)``."""
    host, grads = problem(dtype)
    params = [backend.asarray(p) for p in host]
    state = backend.init_state(params, cfg_at(0))
    for t, g in enumerate(grads):
        backend.step(params, [backend.asarray(x) for x in g], state, cfg_at(t), lr=lr_at(t))
    return [backend.to_numpy(p) for p in params], state.to_dict()


def same_bits(a, b) -> bool:
    (pa, sa), (pb, sb) = a, b
    arrays = lambda p, s: p + [x for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq",
                                           "exp_avg_scale") for x in (s.get(k) or []) if x is not None]
    xs, ys = arrays(pa, sa), arrays(pb, sb)
    return len(xs) == len(ys) and all(x.dtype == y.dtype and np.array_equal(x, y)
                                      for x, y in zip(xs, ys))


@pytest.mark.parametrize("state_dtype", [None, "int8"])
@pytest.mark.parametrize("options", list(OPTIONS))
def test_step_lr_is_a_config_with_that_lr(cpu_backend, options, state_dtype):
    """lr=x gives the bits of a config whose lr is x (decoupled decay uses it too), and
    differs from ignoring it."""
    if state_dtype and not cpu_backend.supports_int8_state:
        pytest.skip(f"{cpu_backend.name} has no int8 state")
    fixed = AdamConfig(**OPTIONS[options], state_dtype=state_dtype)
    scheduled = run(cpu_backend, lambda t: fixed, lambda t: LRS[t], state_dtype)
    fresh = run(cpu_backend, lambda t: AdamConfig(lr=LRS[t], **OPTIONS[options],
                                                  state_dtype=state_dtype),
                lambda t: None, state_dtype)
    ignored = run(cpu_backend, lambda t: fixed, lambda t: None, state_dtype)
    assert same_bits(scheduled, fresh)
    assert not np.array_equal(scheduled[0][0], ignored[0][0])


class ReadsLrFromConfig(NumpyBackend):
    """A plugin written before the lr parameter: its _update reads cfg.lr."""

    name = "reads-lr-from-config"

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                cache):
        super()._update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                        cache)


def test_a_plugin_without_the_lr_parameter_is_given_the_step_lr():
    cfg = AdamConfig(**OPTIONS["adamw"])
    plugin = run(ReadsLrFromConfig(), lambda t: cfg, lambda t: LRS[t])
    numpy = run(NumpyBackend(), lambda t: cfg, lambda t: LRS[t])
    assert same_bits(plugin, numpy)
    assert not ReadsLrFromConfig._update_takes_lr and NumpyBackend._update_takes_lr


class Int8ReadsLrFromConfig(NumpyBackend):
    """A plugin whose int8 step reads cfg.lr (no lr parameter)."""

    name = "int8-reads-lr-from-config"

    def _update_int8(self, p, g, moments, cfg, t):
        super()._update_int8(p, g, moments, cfg, t)


def test_an_int8_plugin_without_the_lr_parameter_is_given_the_step_lr():
    cfg = AdamConfig(state_dtype="int8", **OPTIONS["adamw"])
    plugin = run(Int8ReadsLrFromConfig(), lambda t: cfg, lambda t: LRS[t], "int8")
    numpy = run(NumpyBackend(), lambda t: cfg, lambda t: LRS[t], "int8")
    assert same_bits(plugin, numpy)
    assert not Int8ReadsLrFromConfig._update_int8_takes_lr


@pytest.mark.parametrize("lr, error, match", [
    (-1e-3, ValueError, r"Invalid lr: -0\.001 \(expected lr >= 0\)"),
    (float("nan"), ValueError, r"lr must be finite, got nan"),
    (float("inf"), ValueError, r"lr must be finite, got inf"),
    ("0.1", TypeError, r"lr must be a real number"),
    (True, TypeError, r"lr must be a real number .*not bool"),
])
@pytest.mark.parametrize("state_dtype", [None, "int8"])
def test_a_bad_lr_is_refused_before_anything_changes(cpu_backend, lr, error, match,
                                                     state_dtype):
    if state_dtype and not cpu_backend.supports_int8_state:
        pytest.skip(f"{cpu_backend.name} has no int8 state")
    cfg = AdamConfig(amsgrad=True, state_dtype=state_dtype)
    host, grads = problem()
    state = cpu_backend.init_state(host, AdamConfig(state_dtype=state_dtype))
    before = snapshot(cpu_backend, host, state)
    with pytest.raises(error, match=match):
        cpu_backend.step(host, grads[0], state, cfg, lr=lr)
    assert unchanged(before, cpu_backend, host, state) == ""
    assert state.max_exp_avg_sq is None  # not even a first amsgrad step's zeros


def test_a_schedule_keeps_the_checks(cpu_backend):
    """A changing lr under one config re-runs no check: the validation record stays."""
    cfg = AdamConfig()
    params, grads = problem()
    state = cpu_backend.init_state(params, cfg)
    cpu_backend.step(params, grads[0], state, cfg, lr=LRS[0])
    record = state.cache["validated"]
    for t in range(1, len(LRS)):
        cpu_backend.step(params, grads[0], state, cfg, lr=LRS[t])
    assert state.cache["validated"] is record and state.step == len(LRS)


def groups_of(backend, cfgs):
    host, grads = problem()
    params = [[host[0]], host[1:]]
    states = [backend.init_state(p, c) for p, c in zip(params, cfgs)]
    return params, [[grads[0][0]], grads[0][1:]], states


def test_step_groups_steps_each_group_with_its_config_and_lr(cpu_backend):
    cfgs = [AdamConfig(weight_decay=0.1, decoupled=True), AdamConfig(amsgrad=True)]
    params, grads, states = groups_of(cpu_backend, cfgs)
    expected = [[p.copy() for p in group] for group in params]
    for group, g, c, lr in zip(expected, grads, cfgs, (None, 3e-2)):
        cpu_backend.step(group, g, cpu_backend.init_state(group, c), c, lr=lr)
    cpu_backend.step_groups([(params[0], grads[0], states[0], cfgs[0], None),
                             (params[1], grads[1], states[1], cfgs[1], 3e-2)])
    for got, want in zip(params, expected):
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert [s.step for s in states] == [1, 1]


def bad_groups(backend, how):
    cfg = AdamConfig()
    params, grads, states = groups_of(backend, [cfg, cfg])
    if how == "bad-grad":
        grads[1] = [grads[1][0][:2], grads[1][1]]
    elif how == "bad-lr":
        return params, states, [(params[0], grads[0], states[0], cfg, None),
                                (params[1], grads[1], states[1], cfg, -1.0)]
    elif how == "shared-state":
        states[1] = states[0]
        params[1], grads[1] = params[0], grads[0]
    elif how == "param-in-both":
        params[1] = [params[1][0], params[0][0][:1]]
        states[1] = backend.init_state(params[1], cfg)
    elif how == "grad-is-a-param":
        grads[1] = [params[0][0][:15].reshape(3, 5), grads[1][1]]
    return params, states, [(p, g, s, cfg, None) for p, g, s in zip(params, grads, states)]


@pytest.mark.parametrize("how, match", [
    ("bad-grad", r"param_groups\[1\]: grads\[0\] has shape \(2, 5\) but params\[0\] "
                 r"has \(3, 5\)"),
    ("bad-lr", r"param_groups\[1\]: Invalid lr: -1\.0"),
    ("shared-state", r"param_groups\[0\] and param_groups\[1\] share one state"),
    ("param-in-both", r"param_groups\[0\] params\[0\] and param_groups\[1\] params\[1\] "
                      r"share memory"),
    ("grad-is-a-param", r"param_groups\[0\] params\[0\] and param_groups\[1\] grads\[0\] "
                        r"share memory"),
])
def test_step_groups_checks_every_group_before_any_changes(cpu_backend, how, match):
    params, states, groups = bad_groups(cpu_backend, how)
    before = [snapshot(cpu_backend, p, s) for p, s in zip(params, states)]
    with pytest.raises(ValueError, match=match):
        cpu_backend.step_groups(groups)
    assert [unchanged(b, cpu_backend, p, s) for b, p, s in zip(before, params, states)] \
        == ["", ""]


class RecordingGpu(GpuBackend):
    """The GPU backends' shared step (``backends.cuda._gpu``) over host arrays, recording
    each launch's scalars instead of launching."""

    name = "recording-gpu"
    supports_int8_state = True

    def __init__(self):
        self.launched = []

    def address(self, a):
        return a.__array_interface__["data"][0]

    def span(self, first, n):
        return np.lib.stride_tricks.as_strided(first.reshape(-1), shape=(n,))

    def _launch(self, p, g, m, v, vmax, scalars, dtype):
        self.launched.append(scalars)

    def _launch_int8(self, p, g, moments, scalars):
        self.launched.append(scalars)


@pytest.mark.parametrize("state_dtype", [None, "int8"])
def test_gpu_launches_get_the_step_lr(state_dtype):
    gpu, cfg = RecordingGpu(), AdamConfig(weight_decay=0.1, decoupled=True,
                                          state_dtype=state_dtype)
    params, grads = problem()
    state = gpu.init_state(params, cfg)
    for t, lr in enumerate(LRS[:3], start=1):
        gpu.step(params, grads[0], state, cfg, lr=lr)
        wanted = StepScalars.for_step(AdamConfig(lr=lr, weight_decay=0.1, decoupled=True), t)
        assert gpu.launched and all(s == wanted for s in gpu.launched)
        gpu.launched.clear()
