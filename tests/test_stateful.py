"""A stateful property test: random sequences of steps, refused calls, snapshots and
restores (deepcopy, pickle, state_dict), saves and loads, config changes and backend
switches, on every CPU backend. After every rule: a refused call changed nothing (bit
for bit), numpy and numba hold identical bits, and every backend is within the
tolerances of harness.check.tolerances from the float64 reference.

Two slots swap between numpy and numba; a third runs pure Python. Draws are fixed per run
(the "ci" profile of conftest); ``--hypothesis-profile=explore`` draws fresh ones.
"""
import copy
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from backends import Adam, AdamConfig, get_backend
from backends.reference import ReferenceState, reference_step
from harness.check.agreement import compare
from harness.check.tolerances import ErrorBounds

SWAPPED = {"numpy": "numba", "numba": "numpy"}
_BACKENDS = {}


def backend(name):
    """One instance per name for the whole test (backends are shared, see Backend)."""
    if name not in _BACKENDS:
        _BACKENDS[name] = get_backend(name)
    return _BACKENDS[name]

configs = st.builds(AdamConfig, lr=st.sampled_from([1e-3, 0.01, 0.1]),
                    beta1=st.sampled_from([0.0, 0.5, 0.9]),
                    beta2=st.sampled_from([0.9, 0.999]),
                    eps=st.sampled_from([1e-8, 1e-3]),
                    weight_decay=st.sampled_from([0.0, 0.01, 0.3]),
                    decoupled=st.booleans(), amsgrad=st.booleans(), maximize=st.booleans())


def host(opt):
    """Host copies of everything an optimizer owns: params, step and moments."""
    d = opt.state.to_dict()
    return [p.copy() for p in opt.params], d


def assert_same_bits(a, b):
    (pa, da), (pb, db) = a, b
    assert da["step"] == db["step"]
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert (da[key] is None) == (db[key] is None), key
    arrays_a = pa + sum((da[k] or [] for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")), [])
    arrays_b = pb + sum((db[k] or [] for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")), [])
    for x, y in zip(arrays_a, arrays_b):
        np.testing.assert_array_equal(x.view(f"u{x.itemsize}"), y.view(f"u{y.itemsize}"))


def bad_inputs(opt, grads, kind):
    """(params, grads, restore) of one refused call of ``kind``; ``restore`` undoes what
    was done to the optimizer's own arrays to make it."""
    params, nothing = opt.params, (lambda: None)
    if kind == "short-grads":
        return params, grads[:-1], nothing
    if kind == "dtype":
        other = np.float64 if params[0].dtype == np.float32 else np.float32
        return params, [g.astype(other) for g in grads], nothing
    if kind == "read-only-param":
        frozen = params[-1].copy()
        frozen.flags.writeable = False
        return params[:-1] + [frozen], grads, nothing
    if kind == "aliased":
        return params + [params[0]], grads + [grads[0]], nothing
    if kind == "matrix":
        return params[:-1] + [np.asmatrix(params[-1].reshape(1, -1))], grads, nothing
    if kind == "read-only-moment":
        moment = opt.state.exp_avg_sq[-1]
        moment.flags.writeable = False
        return params, grads, lambda: setattr(moment.flags, "writeable", True)
    # "dtype-in-place": a gradient already stepped with, its dtype changed since
    opt.step(grads)
    grads[-1].dtype = np.int32 if grads[-1].dtype == np.float32 else np.int64
    return params, grads, nothing


class AdamMachine(RuleBasedStateMachine):
    @initialize(dtype=st.sampled_from(["float32", "float64"]),
                sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3),
                cfg=configs, seed=st.integers(0, 2**16))
    def start(self, dtype, sizes, cfg, seed):
        rng = np.random.default_rng(seed)
        self.rng, self.dtype = rng, np.dtype(dtype)
        params = [rng.standard_normal(n).astype(dtype) for n in sizes]
        self.slots = {name: Adam([p.copy() for p in params], backend=backend(name),
                                 **cfg.to_dict())
                      for name in ("numpy", "numba", "python")}
        self.snapshots = []
        self.directory = Path(tempfile.mkdtemp())
        self.references = {}
        for name in self.slots:
            self._anchor(name)

    # --- the reference ------------------------------------------------------------------
    def _anchor(self, name):
        """Restart the float64 reference of a slot at its values (at the start, after a
        config change or a restore), with fresh error bounds."""
        opt = self.slots[name]
        cfg, d = opt.config, opt.state.to_dict()
        ref_p = [p.astype(np.float64) for p in opt.params]
        ref_s = [ReferenceState(m.astype(np.float64), v.astype(np.float64),
                                None if not cfg.amsgrad else
                                (d["max_exp_avg_sq"][i].astype(np.float64)
                                 if d["max_exp_avg_sq"] else np.zeros_like(v, np.float64)))
                 for i, (m, v) in enumerate(zip(d["exp_avg"], d["exp_avg_sq"]))]
        bounds = []
        for s in ref_s:
            bound = ErrorBounds(s.m.shape, self.dtype, cfg)
            with np.errstate(all="ignore"):  # the largest gradient the moments have seen
                bound.g_max = np.fmax(np.abs(s.m), np.sqrt(s.v / (1 - cfg.beta2)))
            bounds.append(bound)
        self.references[name] = (ref_p, ref_s, bounds)

    def _step_reference(self, grads):
        for name, (ref_p, ref_s, bounds) in self.references.items():
            cfg, t = self.slots[name].config, self.slots[name].state.step
            for i, g in enumerate(grads):
                before = ref_p[i]
                ref_p[i], ref_s[i] = reference_step(before, g, ref_s[i], t, cfg)
                bounds[i].advance(t, before, g, ref_p[i], ref_s[i])

    # --- rules --------------------------------------------------------------------------
    def _grads(self, scale):
        return [(scale * self.rng.standard_normal(p.shape)).astype(self.dtype)
                for p in self.slots["numpy"].params]

    @rule(scale=st.sampled_from([1e-3, 1.0, 100.0]))
    def step(self, scale):
        grads = self._grads(scale)
        for opt in self.slots.values():
            opt.step([g.copy() for g in grads])
        self._step_reference(grads)

    @rule(kind=st.sampled_from(["short-grads", "dtype", "read-only-param", "aliased",
                                "matrix", "read-only-moment", "dtype-in-place"]))
    def refused_step(self, kind):
        for name, opt in self.slots.items():
            if kind == "dtype-in-place":  # its first step is a real one: keep slots equal
                self.step_all_with_in_place_change(kind)
                return
            before = host(opt)
            params, grads, undo = bad_inputs(opt, self._grads(1.0), kind)
            with pytest.raises((TypeError, ValueError)):
                opt.backend.step(params, grads, opt.state, opt.config)
            undo()
            assert_same_bits(before, host(opt))

    def step_all_with_in_place_change(self, kind):
        grads = self._grads(1.0)
        for opt in self.slots.values():
            own = [g.copy() for g in grads]
            params, own, _ = bad_inputs(opt, own, kind)
            before = host(opt)
            with pytest.raises(TypeError, match="has dtype int"):
                opt.step(own)
            assert_same_bits(before, host(opt))
        self._step_reference(grads)

    @rule(how=st.sampled_from(["deepcopy", "pickle", "state_dict"]))
    def snapshot(self, how):
        taken = {}
        for name, opt in self.slots.items():
            state = {"deepcopy": lambda: copy.deepcopy(opt.state),
                     "pickle": lambda: pickle.loads(pickle.dumps(opt.state)),
                     "state_dict": opt.state_dict}[how]()
            taken[name] = (how, state, opt.config, [p.copy() for p in opt.params])
        self.snapshots.append(taken)

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data())
    def restore(self, data):
        taken = data.draw(st.sampled_from(self.snapshots))
        for name, opt in self.slots.items():
            how, state, cfg, params = taken[name]
            for live, saved in zip(opt.params, params):
                live[...] = saved
            if how == "state_dict":
                opt.load_state_dict(copy.deepcopy(state))
            else:  # a snapshot may be restored twice: the optimizer gets its own copy
                opt.state, opt.config = copy.deepcopy(state), cfg
            self._anchor(name)

    @rule()
    def save_and_load(self):
        for name, opt in list(self.slots.items()):
            path = self.directory / f"{name}.npz"
            opt.save(path)
            self.slots[name] = Adam.load(path, opt.params, backend=opt.backend)

    @rule(cfg=configs)
    def change_config(self, cfg):
        opt = self.slots["numpy"]
        if cfg.amsgrad and opt.state.max_exp_avg_sq is None and opt.state.step:
            for opt in self.slots.values():
                before = host(opt)
                with pytest.raises(ValueError, match="amsgrad=True but state has no"):
                    opt.backend.step(opt.params, self._grads(1.0), opt.state, cfg)
                assert_same_bits(before, host(opt))
            return
        for name, opt in self.slots.items():
            opt.config = cfg
            self._anchor(name)

    @rule(slot=st.sampled_from(["numpy", "numba"]))
    def switch_backend(self, slot):
        opt = self.slots[slot]
        moved = Adam(opt.params, backend=backend(SWAPPED[opt.backend.name]),
                     **opt.config.to_dict())
        moved.load_state_dict(opt.state_dict())
        self.slots[slot] = moved

    # --- invariants ---------------------------------------------------------------------
    @invariant()
    def numpy_and_numba_hold_identical_bits(self):
        if hasattr(self, "slots"):
            assert_same_bits(host(self.slots["numpy"]), host(self.slots["numba"]))

    @invariant()
    def every_backend_is_within_tolerance_of_the_reference(self):
        if not hasattr(self, "slots"):
            return
        for name, opt in self.slots.items():
            d = opt.state.to_dict()
            ref_p, ref_s, bounds = self.references[name]
            checks = [(opt.params, ref_p, [b.p for b in bounds]),
                      (d["exp_avg"], [s.m for s in ref_s], [b.m for b in bounds]),
                      (d["exp_avg_sq"], [s.v for s in ref_s], [b.v for b in bounds])]
            for actual, expected, tolerance in checks:
                for a, e, tol in zip(actual, expected, tolerance):
                    errors = compare(a, e, tol, self.dtype, opt.state.step, name)
                    assert errors.within_tolerance, (name, errors)


TestAdamMachine = pytest.mark.filterwarnings(
    "ignore:the matrix subclass:PendingDeprecationWarning")(AdamMachine.TestCase)
TestAdamMachine.settings = settings(stateful_step_count=20)
