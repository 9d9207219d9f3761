"""The validated step of int8 state (``state_dtype="int8"``, see ``int8_codec``).

Every check happens before anything is written, as in ``Backend.step``: params and grads
as there (float32 only), each moment's uint8 codes and float32 scales for int8
tensors, float32 moments for the others, and no written array sharing memory with another.
Full-precision tensors then go through the backend's own float32 step; each int8
tensor through its ``_update_int8``.
"""
from __future__ import annotations

import numpy as np

from ._array_headers import data_addresses
from .int8_codec import INT8_MOMENTS, SCALE_NAMES, has_int8_state, init_int8_state, n_blocks
from .memory import first_overlap, weak_references
from .state import AdamState, checked_step
from .update_calls import call_update, call_update_int8
from .validation import as_list, check_array, check_config, check_tensors, headers, remembered

__all__ = ["prepare_int8", "apply_int8", "check_int8", "require_int8_support",
           "int8_backend_refusal"]

_FLOAT32 = np.dtype(np.float32)


def int8_backend_refusal(backend) -> str:
    """What a backend without int8 state answers to ``state_dtype='int8'``."""
    return (f"state_dtype='int8' is not implemented by the {backend.name} backend (it is "
            "by python, numpy, numba, numba-cuda and cupy); use one of those or "
            "state_dtype=None")


def require_int8_support(backend, params) -> None:
    """ValueError unless ``backend`` implements int8 state and every param is float32."""
    if not backend.supports_int8_state:
        raise ValueError(int8_backend_refusal(backend))
    for i, p in enumerate(params):
        if np.dtype(p.dtype) != _FLOAT32:
            raise TypeError(f"state_dtype='int8' needs float32 params; params[{i}] has "
                            f"dtype {p.dtype}")


def check_int8(backend, params, grads, state, cfg) -> tuple[list, list | None, int]:
    """(params, grads, step) after every check of an int8 step (``grads`` None: the
    checks of a restored state); raises before anything is modified."""
    if not isinstance(state, AdamState):
        raise TypeError(f"state must be an AdamState, got {type(state).__name__}")
    step = checked_step(state.step)
    params = as_list(params, "params")
    require_int8_support(backend, params)
    check_tensors(backend, params, "params")
    if grads is not None:
        grads = as_list(grads, "grads")
        if len(grads) != len(params):
            raise ValueError(f"params and grads differ in length: {len(params)} vs "
                             f"{len(grads)}")
        check_tensors(backend, grads, "grads", like=params)
    if cfg.amsgrad and state.max_exp_avg_sq is None and step != 0:
        raise ValueError("amsgrad=True but state has no max_exp_avg_sq: it was "
                         "stepped with amsgrad=False")
    written = list(params)
    for name, scale_name in zip(INT8_MOMENTS, SCALE_NAMES):
        arrays, scales = getattr(state, name), getattr(state, scale_name)
        if name == "max_exp_avg_sq" and (arrays is None or not cfg.amsgrad):
            continue
        _check_moment(backend, params, arrays, scales, name)
        written += [a for a in arrays] + [s for s in scales if s is not None]
    check_config({_FLOAT32: list(range(len(params)))}, cfg)
    arrays = written + list(grads or ())
    starts = data_addresses(arrays)
    nbytes = np.array([a.size * a.dtype.itemsize for a in arrays], dtype=np.int64)
    is_written = np.arange(len(arrays)) < len(written)
    pair = first_overlap(starts, starts + nbytes, is_written)
    if pair is not None:
        raise ValueError("two of params, state codes, scales and moments share memory "
                         f"(arrays {pair[0]} and {pair[1]} in order params, moments, "
                         "scales, grads); each needs memory of its own")
    return params, grads, step


def _check_moment(backend, params, arrays, scales, name) -> None:
    for what, column in ((name, arrays), (f"{name}_scale", scales)):
        if not isinstance(column, (list, tuple)) or len(column) != len(params):
            n = "none" if not isinstance(column, (list, tuple)) else len(column)
            raise ValueError(f"state.{what} holds {n} entries but params has "
                             f"{len(params)}: the state was made for other tensors (or "
                             "without state_dtype='int8')")
    for i, p in enumerate(params):
        if has_int8_state(p):
            check_array(backend, arrays[i], f"state.{name}[{i}]", np.uint8, p.shape)
            check_array(backend, scales[i], f"state.{name}_scale[{i}]", np.float32,
                         (n_blocks(p.size),))
        else:
            if scales[i] is not None:
                raise ValueError(f"state.{name}_scale[{i}] must be None: params[{i}] has "
                                 "full-precision state (fewer than 4096 elements)")
            check_array(backend, arrays[i], f"state.{name}[{i}]", np.float32, p.shape)


def prepare_int8(backend, params, grads, state, cfg) -> tuple:
    """(plan, step) of one Adam step with int8 state after every check, nothing
    modified; ``apply_int8`` runs it.

    What was checked is remembered in ``state.cache["validated_int8"]``, as
    ``Backend._validate`` does for full-precision state: the same arrays (by identity)
    with the same headers and the same cfg skip the checks and reuse the kernels'
    arguments (at 4096 elements the checks cost 35 us, the numba step 5)."""
    kept = remembered(state.cache.get("validated_int8"), cfg,
                      _all_arrays(params, grads, state), state)
    plan, step = kept if kept is not None else _checked_plan(backend, params, grads, state,
                                                             cfg)
    small, sub, _ = plan
    if sub is not None:
        sub.step = step
        backend._validate(*small, sub, cfg)
    return plan, step


def apply_int8(backend, plan, step, state, cfg, lr) -> None:
    """Run a plan of ``prepare_int8`` as step ``step + 1`` at learning rate ``lr``
    (None: cfg.lr); ``state.step`` goes up by one."""
    t = step + 1
    small, sub, int8_tensors = plan
    if sub is not None:
        small_params, small_grads = small
        call_update(backend, small_params, small_grads, sub.exp_avg, sub.exp_avg_sq,
                    sub.max_exp_avg_sq if cfg.amsgrad else None, cfg, t, _FLOAT32,
                    sub.cache, lr)
    for p, g, moments in int8_tensors:
        call_update_int8(backend, p, g, moments, cfg, t, state.cache, lr)
    state.step = t


def _all_arrays(params, grads, state) -> list | None:
    """Every array a step reads or writes, in a fixed order (None where a column is no
    sequence: the full checks say what is wrong)."""
    try:
        columns = [params, grads] + [getattr(state, name) or () for name in
                                     INT8_MOMENTS + SCALE_NAMES]
        return [a for column in columns for a in column]
    except TypeError:
        return None


def _checked_plan(backend, params, grads, state, cfg) -> tuple[tuple, int]:
    """Every check, then the step's plan: ((small params, small grads), the sub-state of
    the full-precision tensors or None, [(p, g, moments)] of the int8 tensors, 1-D),
    remembered in ``state.cache``; and the step as an int."""
    params, grads, step = check_int8(backend, params, grads, state, cfg)
    small = [i for i, p in enumerate(params) if not has_int8_state(p)]
    sub = None
    if small:
        sub = state.cache.get("full_precision")
        if sub is None:
            sub = state.cache["full_precision"] = AdamState(0, [], [])
        sub.step = step
        sub.exp_avg = [state.exp_avg[i] for i in small]
        sub.exp_avg_sq = [state.exp_avg_sq[i] for i in small]
        sub.max_exp_avg_sq = (None if state.max_exp_avg_sq is None
                              else [state.max_exp_avg_sq[i] for i in small])
        backend._validate([params[i] for i in small], [grads[i] for i in small], sub, cfg)
    # every check passed: from here on, state may change
    if cfg.amsgrad and state.max_exp_avg_sq is None:
        _add_max(backend, params, state, sub, small)
    int8_tensors = []
    for i, p in enumerate(params):
        if has_int8_state(p):
            pairs = [(getattr(state, n)[i].reshape(-1), getattr(state, s)[i])
                     for n, s in zip(INT8_MOMENTS, SCALE_NAMES)
                     if n != "max_exp_avg_sq" or cfg.amsgrad]
            int8_tensors.append((p.reshape(-1), grads[i].reshape(-1),
                              (*pairs[:2], pairs[2] if cfg.amsgrad else None)))
    plan = (([params[i] for i in small], [grads[i] for i in small]), sub, int8_tensors)
    arrays = _all_arrays(params, grads, state)
    _, _, unchanged = headers(backend, arrays)
    state.cache["validated_int8"] = {"cfg": cfg, "arrays": arrays, "unchanged": unchanged,
                                     "weakrefs": weak_references(arrays), "plan": plan}
    return plan, step


def _add_max(backend, params, state, sub, small) -> None:
    """A first amsgrad step's zero running maximum: codes and scales where int8, the
    float32 zeros ``Backend._validate`` gave the full-precision tensors elsewhere."""
    zeros = init_int8_state(backend, params, amsgrad=True)
    vmax, scales = zeros.max_exp_avg_sq, zeros.max_exp_avg_sq_scale
    for k, i in enumerate(small):
        vmax[i] = sub.max_exp_avg_sq[k]
    state.max_exp_avg_sq, state.max_exp_avg_sq_scale = vmax, scales
