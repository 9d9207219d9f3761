"""The validated step of low-precision params and state (``backends.formats``).

Params of dtype bfloat16, float16 or float32 (not float64), grads of the params' dtype or
float32, moments of ``formats.moment_dtype``; with ``master_weights`` a float32 master copy
per param, with ``rounding="kahan"`` a compensation buffer of the params' dtype. Every
check happens before anything is written, as in ``Backend.step``; then the backend's
``_update_low_precision_plan`` steps every tensor (float32 arithmetic, the roundings of
``formats``), each with its stochastic-rounding key ``formats.stream_key(seed, step,
index)``: by default one ``_update_low_precision`` call per tensor; numba steps all the
tensors of one format in one kernel call.

Refused, with the param named: master weights, stochastic or Kahan rounding for a float32
param (it has nothing to round); stochastic rounding for float16 (bfloat16 only).
"""
from __future__ import annotations

import operator

import numpy as np

from .formats import BFLOAT16, FLOAT32, LOW_PRECISION_DTYPES, moment_dtype, widen
from ._array_headers import data_addresses
from .memory import first_overlap, weak_references
from .state import AdamState, checked_step
from .validation import as_list, check_array, check_config, headers, remembered

__all__ = ["init_low_precision_state", "check_low_precision", "prepare_low_precision",
           "apply_low_precision",
           "tensor_layout", "dtype_refusal", "backend_refusal", "PARAM_DTYPES"]

#: The params' dtypes a low-precision step takes.
PARAM_DTYPES = (BFLOAT16, np.dtype(np.float16), FLOAT32)
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def tensor_layout(param_dtype, cfg) -> dict:
    """{state field: dtype} of one param's state under ``cfg`` (amsgrad's maximum
    included when ``cfg.amsgrad``)."""
    state = moment_dtype(param_dtype, cfg)
    layout = {"exp_avg": state, "exp_avg_sq": state}
    if cfg.amsgrad:
        layout["max_exp_avg_sq"] = state
    if cfg.master_weights:
        layout["master_params"] = FLOAT32
    if cfg.rounding == "kahan":
        layout["compensation"] = np.dtype(param_dtype)
    return layout


def _check_params(backend, params, cfg) -> list:
    if not backend.supports_low_precision:
        raise ValueError(backend_refusal(backend))
    params = as_list(params, "params")
    for i, p in enumerate(params):
        if not isinstance(p, backend.array_type):
            raise TypeError(f"params[{i}] is {type(p).__name__}; the {backend.name} backend "
                            f"needs {backend.array_type.__name__}")
        refusal = dtype_refusal(p.dtype, cfg, f"params[{i}]")
        if refusal is not None:
            raise TypeError(refusal)
        check_array(backend, p, f"params[{i}]", p.dtype, p.shape)
    return params


def backend_refusal(backend) -> str:
    """What a backend without low-precision steps answers to them."""
    return (f"low-precision params and state are not implemented by the {backend.name} "
            "backend (they are by python, numpy, numba, numba-cuda and cupy)")


def dtype_refusal(dtype, cfg, what: str) -> str | None:
    """Why a param of ``dtype`` (named ``what``) cannot take ``cfg``'s low-precision
    options and state, or None when it can: the one rule for every caller."""
    if dtype not in PARAM_DTYPES:
        return (f"{what} has dtype {dtype}; low-precision steps take bfloat16, float16 or "
                "float32 params (float64 takes no low-precision option or state)")
    if (cfg.master_weights or cfg.rounding != "nearest") and dtype not in LOW_PRECISION_DTYPES:
        option = "master_weights=True" if cfg.master_weights else f"rounding={cfg.rounding!r}"
        return (f"{option} needs bfloat16 or float16 params; {what} is {dtype}, which has "
                "nothing to round")
    if cfg.rounding == "stochastic" and dtype != BFLOAT16:
        return (f"rounding='stochastic' is implemented for bfloat16 params; {what} is "
                f"{dtype} (use rounding='kahan' or master_weights=True)")
    return None


def init_low_precision_state(backend, params, cfg) -> AdamState:
    """Zero moments, master copies (the params widened to float32) and zero compensation,
    as ``tensor_layout`` says; each field's tensors are views of one buffer per dtype."""
    params = _check_params(backend, params, cfg)
    host = [backend.to_numpy(p) for p in params]
    fields = {}
    for name in _field_names(cfg):
        if name == "master_params":
            fields[name] = _views_by_dtype(backend, [widen(p) for p in host])
        else:
            fields[name] = _views_by_dtype(backend, [
                np.zeros(p.shape, tensor_layout(p.dtype, cfg)[name]) for p in host])
    return AdamState(step=0, **fields)


def _field_names(cfg) -> list:
    """The state fields ``cfg`` gives every param (the same for every dtype)."""
    return list(tensor_layout(BFLOAT16, cfg))


def _views_by_dtype(backend, arrays) -> list:
    """Backend copies of host ``arrays``: views of one flat buffer per dtype, in order."""
    out = [None] * len(arrays)
    groups: dict = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.dtype, []).append(i)
    for idx in groups.values():
        for i, view in zip(idx, backend.flatten([arrays[i] for i in idx])[1]):
            out[i] = view
    return out


def check_low_precision(backend, params, grads, state, cfg) -> tuple[list, list | None, int]:
    """(params, grads, step) after every check of a low-precision step (``grads`` None:
    the checks of a restored state); raises before anything is modified."""
    if not isinstance(state, AdamState):
        raise TypeError(f"state must be an AdamState, got {type(state).__name__}")
    step = checked_step(state.step)
    params = _check_params(backend, params, cfg)
    if grads is not None:
        grads = as_list(grads, "grads")
        if len(grads) != len(params):
            raise ValueError(f"params and grads differ in length: {len(params)} vs "
                             f"{len(grads)}")
        for i, (p, g) in enumerate(zip(params, grads)):
            _check_grad(backend, g, i, p)
    if cfg.amsgrad and state.max_exp_avg_sq is None and step != 0:
        raise ValueError("amsgrad=True but state has no max_exp_avg_sq: it was "
                         "stepped with amsgrad=False")
    layouts = [tensor_layout(p.dtype, cfg) for p in params]
    written = list(params)
    for name in _field_names(cfg):
        column = getattr(state, name)
        if name == "max_exp_avg_sq" and column is None:  # its first step: zeros follow
            continue
        if not isinstance(column, (list, tuple)) or len(column) != len(params):
            n = "none" if not isinstance(column, (list, tuple)) else len(column)
            raise ValueError(f"state.{name} holds {n} tensors but params has {len(params)}: "
                             "the state was made for other tensors or options")
        for i, (a, p, layout) in enumerate(zip(column, params, layouts)):
            check_array(backend, a, f"state.{name}[{i}]", layout[name], p.shape)
        written += list(column)
    check_config({FLOAT32: list(range(len(params)))}, cfg)
    _refuse_shared_memory(_bounds(written), list(grads or ()))
    return params, grads, step


def _bounds(arrays: list) -> tuple:
    """(first byte, byte after the last) of each array, as int64 arrays."""
    starts = data_addresses(arrays)
    return starts, starts + np.array([a.size * a.dtype.itemsize for a in arrays],
                                     dtype=np.int64)


def _refuse_shared_memory(written: tuple, grads: list) -> None:
    """ValueError if an array the step writes (``written``: its ``_bounds``) shares
    memory with another one or with a grad (grads may share with grads)."""
    starts, ends = (np.concatenate([w, g]) for w, g in zip(written, _bounds(grads)))
    pair = first_overlap(starts, ends, np.arange(starts.size) < written[0].size)
    if pair is not None:
        raise ValueError("two of params, state moments, master params, compensation and "
                         f"grads share memory (arrays {pair[0]} and {pair[1]} in that "
                         "order); each written array needs memory of its own")


def _check_grad(backend, g, i, p) -> None:
    """grads[i]: the backend's array type, the params' dtype or float32, their shape,
    contiguous (it may be read-only)."""
    if not isinstance(g, backend.array_type) or g.dtype not in (p.dtype, FLOAT32):
        found = g.dtype if isinstance(g, backend.array_type) else type(g).__name__
        raise TypeError(f"grads[{i}] is {found}; params[{i}] is {p.dtype}, so its grads "
                        f"must be {backend.array_type.__name__} of {p.dtype} or float32")
    if tuple(g.shape) != tuple(p.shape):
        raise ValueError(f"grads[{i}] has shape {tuple(g.shape)} but params[{i}] has "
                         f"{tuple(p.shape)}")
    if not backend._is_contiguous(g):
        raise ValueError(f"grads[{i}] is not C-contiguous; pass a contiguous array")


def prepare_low_precision(backend, params, grads, state, cfg) -> tuple:
    """(plan, step) of one low-precision step after every check, nothing modified;
    ``apply_low_precision`` runs it. What was checked is remembered in
    ``state.cache["validated_low_precision"]`` as ``Backend._validate`` does: the same
    arrays with the same headers and the same cfg skip the checks, and new grads with
    everything else the same (a training loop's fresh gradients) check the grads only."""
    seen = state.cache.get("validated_low_precision")
    arrays = _all_arrays(params, grads, state)
    kept = remembered(seen, cfg, arrays, state)
    if kept is not None:
        return kept
    if _only_grads_are_new(seen, cfg, arrays):
        return _new_grads_plan(backend, params, grads, state, cfg, arrays, seen)
    params, grads, step = check_low_precision(backend, params, grads, state, cfg)
    return _remembered_plan(backend, params, grads, state, cfg), step


def apply_low_precision(backend, plan, step, state, cfg, lr) -> None:
    """Run a plan of ``prepare_low_precision`` as step ``step + 1`` at learning rate
    ``lr`` (None: cfg.lr); ``state.step`` goes up by one."""
    t = step + 1
    backend._update_low_precision_plan(plan, cfg, t, lr=lr)
    state.step = t


def _all_arrays(params, grads, state) -> list | None:
    try:
        columns = [params, grads] + [getattr(state, name) or () for name in
                                     _MOMENTS + ("master_params", "compensation")]
        return [a for column in columns for a in column]
    except TypeError:
        return None


def _only_grads_are_new(seen, cfg, arrays) -> bool:
    """Whether ``arrays`` (``_all_arrays``) are the remembered step's but for the grads,
    under the same cfg, every remembered header unchanged."""
    if seen is None or cfg is not seen["cfg"] or arrays is None:
        return False
    old, n = seen["arrays"], seen["count"]
    return (len(arrays) == len(old) and all(map(operator.is_, arrays[:n], old[:n]))
            and all(map(operator.is_, arrays[2 * n:], old[2 * n:])) and seen["unchanged"]())


def _new_grads_plan(backend, params, grads, state, cfg, arrays, seen) -> tuple:
    """(plan, step) when only the grads are new (``_only_grads_are_new``): they are
    checked (type, dtype, shape, contiguity, no memory shared with a written array), then
    the remembered plan takes them (``Backend._low_precision_new_grads``)."""
    step = checked_step(state.step)
    n = seen["count"]
    for i, (p, g) in enumerate(zip(params, grads)):
        _check_grad(backend, g, i, p)
    written = seen.get("written") or _bounds(arrays[:n] + arrays[2 * n:])
    _refuse_shared_memory(written, arrays[n:2 * n])
    # every check passed: from here on, state may change
    tensors = [(i, (t[0], backend._low_precision_array(_flat(grads[i]))) + t[2:])
               for i, t in seen["tensors"]]
    plan = backend._low_precision_new_grads(seen["plan"], tensors, cfg)
    _remember(backend, state, cfg, arrays, n, tensors, plan, written, seen["weakrefs"][0])
    return plan, step


def _flat(a):
    """``a`` as 1-D (itself when it is)."""
    return a if a.ndim == 1 else a.reshape(-1)


def _remembered_plan(backend, params, grads, state, cfg):
    """The backend's ``_low_precision_plan`` of [(tensor index, (p, g, m, v, vmax,
    master, compensation) as 1-D arrays or None)] of the non-empty tensors, remembered;
    called when every check has passed (a first amsgrad step gets its zero maximum)."""
    if cfg.amsgrad and state.max_exp_avg_sq is None:
        state.max_exp_avg_sq = _views_by_dtype(
            backend, [np.zeros(p.shape, m.dtype) for p, m in zip(params, state.exp_avg)])
    tensors = []
    for i, (p, g) in enumerate(zip(params, grads)):
        if p.size == 0:
            continue
        column = lambda name, on: getattr(state, name)[i].reshape(-1) if on else None
        tensors.append((i, backend._low_precision_arrays((
            p.reshape(-1), g.reshape(-1), column("exp_avg", True), column("exp_avg_sq", True),
            column("max_exp_avg_sq", cfg.amsgrad), column("master_params", cfg.master_weights),
            column("compensation", cfg.rounding == "kahan")))))
    plan = backend._low_precision_plan(tensors, cfg)
    _remember(backend, state, cfg, _all_arrays(params, grads, state), len(params), tensors,
              plan, None)
    return plan


def _remember(backend, state, cfg, arrays, count, tensors, plan, written,
              kept_refs=None) -> None:
    """Keep what a step checked and planned in ``state.cache`` (see
    ``prepare_low_precision``); ``written``: the ``_bounds`` of the arrays the step
    writes, once a step with new grads has needed them. The weak references (that keep
    NumPy from resizing the arrays under the plan) are (those of every array but the
    grads, the grads'): ``kept_refs``, the first ones, when only the grads are new."""
    _, _, unchanged = headers(backend, arrays)
    if kept_refs is None:
        kept_refs = weak_references(arrays[:count] + arrays[2 * count:])
    state.cache["validated_low_precision"] = {
        "cfg": cfg, "arrays": arrays, "count": count, "unchanged": unchanged,
        "weakrefs": (kept_refs, weak_references(arrays[count:2 * count])),
        "tensors": tensors, "plan": plan, "written": written}
