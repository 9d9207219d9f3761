"""Bad input every backend must refuse with a clear error, before touching any array.

Each case builds params, grads and a state that has taken one step, hands the backend
one bad thing, and returns "" when the backend raised the expected exception with the
expected message and left params and state exactly as they were, else what went wrong.
The cases use NumPy arrays: they are for CPU backends.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from backends import AdamConfig, AdamState, Backend

__all__ = ["BadInputCase", "BAD_INPUT_CASES", "make_setup", "run_bad_input_case", "snapshot",
           "unchanged"]


def make_setup(backend: Backend, dtype=np.float32, shapes=((3, 4), (5,)), cfg=None, seed=0):
    """(params, grads, state, cfg) of backend arrays, the state after one step."""
    rng = np.random.default_rng(seed)
    cfg = cfg or AdamConfig()
    params = [backend.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes]
    grads = [backend.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes]
    state = backend.init_state(params, cfg)
    backend.step(params, grads, state, cfg)
    return params, grads, state, cfg


def snapshot(backend: Backend, params, state) -> tuple:
    """Host copies of params and state, to prove later that a failed call changed nothing."""
    return [np.array(backend.to_numpy(p), copy=True) for p in params], state.to_dict()


def unchanged(before, backend: Backend, params, state) -> str:
    """"" when params and state hold what ``snapshot`` saw, else what changed."""
    old_params, old_state = before
    changed = [f"params[{i}]" for i, (old, new) in enumerate(zip(old_params, params))
               if not np.array_equal(old, backend.to_numpy(new), equal_nan=True)]
    new_state = state.to_dict()
    if new_state["step"] != old_state["step"]:
        changed.append(f"state.step ({old_state['step']} -> {new_state['step']})")
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        if (old_state[key] is None) != (new_state[key] is None):
            changed.append(f"state.{key}")
            continue
        changed += [f"state.{key}[{i}]" for i, (old, new) in
                    enumerate(zip(old_state[key] or [], new_state[key] or []))
                    if not np.array_equal(old, new, equal_nan=True)]
    return f"changed {', '.join(changed)}" if changed else ""


def _rejected(call: Callable, error: type, match: str) -> str:
    """"" when ``call()`` raises ``error`` with a message matching ``match``, else why not."""
    try:
        call()
    except error as exc:
        if re.search(match, str(exc)):
            return ""
        return f"raised {type(exc).__name__}({str(exc)!r}), expected a message matching {match!r}"
    except Exception as exc:  # the wrong kind of error is the finding, not a crash
        return f"raised {type(exc).__name__}({exc!r}), expected {error.__name__}"
    return f"accepted it, expected {error.__name__} matching {match!r}"


def _step_rejected(backend, params, grads, state, cfg, error, match) -> str:
    before = snapshot(backend, params, state)
    why = _rejected(lambda: backend.step(params, grads, state, cfg), error, match)
    return why or unchanged(before, backend, params, state)


def _lengths_differ(be):
    params, grads, state, cfg = make_setup(be)
    return _step_rejected(be, params, grads[:1], state, cfg, ValueError,
                          r"params and grads differ in length: 2 vs 1")


def _shapes_differ(be):
    params, grads, state, cfg = make_setup(be)
    grads[1] = be.asarray(np.zeros(6, np.float32))
    return _step_rejected(be, params, grads, state, cfg, ValueError,
                          r"grads\[1\] has shape \(6,\) but params\[1\] has \(5,\)")


def _dtypes_differ(be):
    params, grads, state, cfg = make_setup(be)
    grads[0] = be.asarray(be.to_numpy(grads[0]).astype(np.float64))
    return _step_rejected(be, params, grads, state, cfg, TypeError,
                          r"grads\[0\] has dtype float64 but params\[0\] has float32")


def _non_float(bad):
    def case(be):
        params = [be.asarray(np.zeros(3, bad))]
        why = _rejected(lambda: be.init_state(params), TypeError,
                        rf"params\[0\] has dtype {bad}; expected float32 or float64")
        state = AdamState(0, [be.asarray(np.zeros(3, bad))], [be.asarray(np.zeros(3, bad))])
        return why or _step_rejected(be, params, [be.asarray(np.zeros(3, bad))], state,
                                     AdamConfig(), TypeError, "expected float32 or float64")
    return case


def _non_contiguous(be):
    params, grads, state, cfg = make_setup(be, shapes=((4, 6),))
    strided = be.asarray(np.zeros((4, 12), np.float32))[:, ::2]
    return _step_rejected(be, [strided], grads, state, cfg, ValueError,
                          r"params\[0\] is not C-contiguous")


def _read_only(be):
    params, grads, state, cfg = make_setup(be)
    params = [params[0], params[1].copy()]
    params[1].flags.writeable = False
    return _step_rejected(be, params, grads, state, cfg, ValueError, r"params\[1\] is read-only")


def _read_only_after_steps(be):
    """An array checked at an earlier step and made read-only since is still caught."""
    params, grads, state, cfg = make_setup(be)
    be.step(params, grads, state, cfg)
    params[0].flags.writeable = False
    return _step_rejected(be, params, grads, state, cfg, ValueError, r"params\[0\] is read-only")


def _state_entry_replaced(be):
    """A moment swapped in after checked steps is checked itself, not trusted by position."""
    params, grads, state, cfg = make_setup(be)
    be.step(params, grads, state, cfg)
    state.exp_avg_sq[1] = be.asarray(np.zeros(6, np.float32))
    return _step_rejected(be, params, grads, state, cfg, ValueError,
                          r"state.exp_avg_sq\[1\] has shape \(6,\) but params\[1\] has \(5,\)")


def _state_for_other_tensors(be):
    params, grads, state, cfg = make_setup(be)
    other = be.init_state([params[0]])
    why = _step_rejected(be, params, grads, other, cfg, ValueError,
                         r"state.exp_avg holds 1 tensors but params has 2: the state was made "
                         "for other tensors")
    reshaped = be.init_state([params[0].reshape(-1), params[1]])
    return why or _step_rejected(be, params, grads, reshaped, cfg, ValueError,
                                 r"state.exp_avg\[0\] has shape \(12,\) but params\[0\] has "
                                 r"\(3, 4\)")


def _moments_no_list(bad, error, match):
    def case(be):
        params, grads, state, cfg = make_setup(be)
        before = snapshot(be, params, state)
        state.exp_avg_sq = bad
        why = _rejected(lambda: be.step(params, grads, state, cfg), error, match)
        state.exp_avg_sq = before[1]["exp_avg_sq"]
        return why or unchanged(before, be, params, state)
    return case


def _wrong_array_kind(be):
    params, grads, state, cfg = make_setup(be)
    return _step_rejected(be, params, [grads[0], be.to_numpy(grads[1]).tolist()], state, cfg,
                          TypeError, rf"grads\[1\] is builtins.list; the {re.escape(be.name)} "
                                     "backend needs ")


def _wrong_config_type(be):
    params, grads, state, cfg = make_setup(be)
    return _step_rejected(be, params, grads, state, {"lr": 1e-3}, TypeError,
                          "cfg must be an AdamConfig, got dict")


def _wrong_state_type(be):
    params, grads, _, cfg = make_setup(be)
    return _rejected(lambda: be.step(params, grads, {"step": 0}, cfg), TypeError,
                     "state must be an AdamState, got dict")


def _amsgrad_switched_on(be):
    params, grads, state, cfg = make_setup(be)
    return _step_rejected(be, params, grads, state, AdamConfig(amsgrad=True), ValueError,
                          "amsgrad=True but state has no max_exp_avg_sq")


def _eps_rounds_to_zero(be):
    params, grads, state, cfg = make_setup(be)
    return _step_rejected(be, params, grads, state, AdamConfig(eps=1e-50), ValueError,
                          r"eps=1e-50 rounds to 0 in float32")


def _weight_decay_rounds_to_zero(be):
    params, grads, state, cfg = make_setup(be)
    return _step_rejected(be, params, grads, state, AdamConfig(weight_decay=1e-50), ValueError,
                          r"weight_decay=1e-50 rounds to 0 in float32")


def _aliased_params(be):
    """The same array twice would be updated twice: refused, naming both."""
    params, grads, state, cfg = make_setup(be, shapes=((6,), (6,)))
    return _step_rejected(be, [params[0], params[0]], grads, state, cfg, ValueError,
                          r"params\[0\] and params\[1\] share memory")


def _step_out_of_range(be):
    """A step count whose next step would not fit the kernels' int64."""
    params, grads, state, cfg = make_setup(be)
    state.step = 2**63 - 1
    why = _rejected(lambda: be.step(params, grads, state, cfg), ValueError,
                    r"state.step must be an int in 0\.\.2\*\*63-2")
    state.step = 1
    return why


def _params_not_arrays(be):
    return _rejected(lambda: be.init_state(3), TypeError,
                     "params must be an array or a sequence of arrays, got int")


@dataclass(frozen=True)
class BadInputCase:
    """A named bad input; ``run(backend)`` returns "" when it was refused properly."""

    name: str
    run: Callable[[Backend], str]


BAD_INPUT_CASES = [
    BadInputCase("lengths-differ", _lengths_differ),
    BadInputCase("shapes-differ", _shapes_differ),
    BadInputCase("dtypes-differ", _dtypes_differ),
    *[BadInputCase(f"{bad}-params", _non_float(bad)) for bad in ("int64", "uint16", "int32")],
    BadInputCase("non-contiguous-params", _non_contiguous),
    BadInputCase("read-only-params", _read_only),
    BadInputCase("read-only-after-steps", _read_only_after_steps),
    BadInputCase("state-entry-replaced", _state_entry_replaced),
    BadInputCase("state-for-other-tensors", _state_for_other_tensors),
    BadInputCase("moments-not-a-list", _moments_no_list(
        5, TypeError, r"state.exp_avg_sq must be a list of arrays, got int")),
    BadInputCase("moments-none", _moments_no_list(
        None, ValueError, r"state.exp_avg_sq holds none tensors but params has 2")),
    BadInputCase("wrong-array-kind", _wrong_array_kind),
    BadInputCase("wrong-config-type", _wrong_config_type),
    BadInputCase("wrong-state-type", _wrong_state_type),
    BadInputCase("amsgrad-switched-on", _amsgrad_switched_on),
    BadInputCase("eps-rounds-to-zero", _eps_rounds_to_zero),
    BadInputCase("weight-decay-rounds-to-zero", _weight_decay_rounds_to_zero),
    BadInputCase("aliased-params", _aliased_params),
    BadInputCase("step-out-of-range", _step_out_of_range),
    BadInputCase("params-not-arrays", _params_not_arrays),
]


def run_bad_input_case(case: BadInputCase, backend: Backend) -> str:
    """"" when ``backend`` refused ``case`` properly, else why not (a crash in the setup
    itself, e.g. a backend whose first step fails, is reported the same way)."""
    try:
        return case.run(backend)
    except Exception as exc:  # the backend under test may raise anything in the setup
        return f"setup failed: {type(exc).__name__}: {exc}"
