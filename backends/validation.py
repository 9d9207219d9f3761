"""The checks of a step: every argument of ``Backend.step`` is checked here before any
array is touched, so a refused call leaves parameters and state exactly as they were.

Functions of the backend they check (its ``array_type``, ``name``, ``_is_contiguous``,
``_is_writeable``, ``empty``), not methods: the int8 and low-precision steps
(``int8_step``, ``low_precision_step``) run the same checks without depending on
``base``, and ``base`` stays the contract a backend author reads.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np

from ._array_headers import data_addresses, headers_match, read_headers, unchanged_check
from .config import AdamConfig
from .formats import LOW_PRECISION_DTYPES
from .memory import first_overlap, group_by_dtype, weak_references
from .state import MAX_STEP, AdamState, checked_step

__all__ = ["FLOAT_DTYPES", "COLUMN_NAMES", "validate", "check_state", "check_config",
           "check_tensors", "check_array", "check_aliasing", "check_across_groups",
           "remembered", "headers", "as_list"]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: The step's columns, in the order the checks and their messages use.
COLUMN_NAMES = ("params", "grads", "state.exp_avg", "state.exp_avg_sq",
                "state.max_exp_avg_sq")


def validate(backend, params, grads, state, cfg):
    """(params, grads, {dtype: tensor indices}, step as an int) after every check, or
    an exception. Only when every check has passed, a first amsgrad step gets its
    zero ``max_exp_avg_sq``.

    What was checked is remembered in ``state.cache["validated"]``, holding the
    arrays themselves (so none can be freed and its id reused, and, through weak
    references, none resized): a training loop that passes the same arrays each step
    pays one identity test per array and one compiled read of the arrays' headers
    (``_array_headers``: dtype, shape, flags, data address), so an array changed in
    place is checked again. Its ``key`` (a new object) is replaced whenever anything
    changed, and ``columns`` holds one list of arrays per column (params, grads,
    exp_avg, exp_avg_sq, max_exp_avg_sq), replaced exactly when that column changed:
    backends that derive data from the arrays (addresses) compare those lists by
    identity.
    """
    if type(cfg) is not AdamConfig and not isinstance(cfg, AdamConfig):
        raise TypeError(f"cfg must be an AdamConfig, got {type(cfg).__name__}")
    if type(state) is not AdamState and not isinstance(state, AdamState):
        raise TypeError(f"state must be an AdamState, got {type(state).__name__}")
    step = state.step
    if type(step) is not int or not 0 <= step <= MAX_STEP:
        step = checked_step(step)
    if type(params) is not list:
        params = [params] if type(params) is np.ndarray else as_list(params, "params")
    if type(grads) is not list:
        grads = [grads] if type(grads) is np.ndarray else as_list(grads, "grads")
    m, v = state.exp_avg, state.exp_avg_sq
    amax = state.max_exp_avg_sq if cfg.amsgrad else None
    try:  # the columns' lengths, and every array in one list: C loops compare them
        lengths = (len(params), len(grads), len(m), len(v), -1 if amax is None else len(amax))
        arrays = [*params, *grads, *m, *v, *(amax or ())]
    except TypeError:  # a state column that is no sequence: the checks below say which
        lengths = arrays = None
    seen = state.cache.get("validated")
    if (seen is not None and cfg is seen["cfg"] and lengths == seen["lengths"]
            and all(map(operator.is_, arrays, seen["arrays"]))
            and seen["unchanged"]()):
        return params, grads, seen["groups"], step
    columns = (params, grads, m, v, amax)
    return _validate_changed(backend, params, grads, state, cfg, columns, step, seen)


def _validate_changed(backend, params, grads, state, cfg, columns, step, seen):
    """The rest of ``_validate`` when some array, header or the config differs from
    the last step's: the columns that changed are checked again, then aliasing."""
    if len(grads) != len(params):
        raise ValueError(f"params and grads differ in length: {len(params)} vs {len(grads)}")
    if cfg.amsgrad and state.max_exp_avg_sq is None and step != 0:
        raise ValueError("amsgrad=True but state has no max_exp_avg_sq: it was "
                         "stepped with amsgrad=False")
    old = seen["columns"] if seen is not None else [None] * 5
    stale = []
    for c, arrays in enumerate(columns):
        if c == 4 and arrays is None:  # no amsgrad, or its first step
            continue
        if not _same_arrays(arrays, old[c]) or _changed_in_place(seen, arrays, c):
            _check_column(backend, arrays, COLUMN_NAMES[c], params)
            stale.append(c)
    groups = seen["groups"] if seen is not None and 0 not in stale else \
        group_by_dtype(params)
    check_config(groups, cfg)
    present = [c for c in columns if c is not None]
    if stale:
        check_aliasing(backend, present, params)
    # every check passed: from here on, state may change
    if cfg.amsgrad and state.max_exp_avg_sq is None:
        state.max_exp_avg_sq = backend._zeros_views(params)
        present.append(state.max_exp_avg_sq)
        stale.append(4)
    new_columns = [list(column) if c in stale else old[c] for c, column in enumerate(present)]
    new_columns += [None] * (5 - len(new_columns))
    arrays = [a for c in present for a in c]
    objects, table, unchanged = headers(backend, arrays)
    state.cache["validated"] = {
        "arrays": arrays, "weakrefs": weak_references(arrays),
        "lengths": tuple(len(c) for c in present) + ((-1,) if len(present) == 4 else ()),
        "columns": new_columns, "cfg": cfg, "groups": groups, "key": object(),
        "objects": objects, "headers": table, "unchanged": unchanged}
    return params, grads, groups, step


def check_state(backend, params, state: AdamState, cfg: AdamConfig) -> None:
    """Every check ``step`` makes of params, full-precision state and config (not of
    gradients), and nothing changed: for restoring a state before its first step."""
    if type(state) is not AdamState and not isinstance(state, AdamState):
        raise TypeError(f"state must be an AdamState, got {type(state).__name__}")
    checked_step(state.step)
    params = as_list(params, "params")
    if cfg.amsgrad and state.max_exp_avg_sq is None and state.step != 0:
        raise ValueError("amsgrad=True but state has no max_exp_avg_sq: it was "
                         "stepped with amsgrad=False")
    columns = [params, state.exp_avg, state.exp_avg_sq]
    if cfg.amsgrad and state.max_exp_avg_sq is not None:
        columns.append(state.max_exp_avg_sq)
    check_tensors(backend, params, "params")
    for name, arrays in zip(COLUMN_NAMES[2:], columns[1:]):
        _check_moment(backend, arrays, name, params)
    check_config(group_by_dtype(params), cfg)
    check_aliasing(backend, columns, params, names=("params",) + COLUMN_NAMES[2:])


def check_config(groups, cfg) -> None:
    """eps and weight_decay must not round to 0 in any dtype stepped (the kernels
    compute in the arrays' dtype)."""
    for dtype in groups:
        for name in ("eps", "weight_decay"):
            value = getattr(cfg, name)
            if value != 0 and dtype.type(value) == 0:
                raise ValueError(f"{name}={value!r} rounds to 0 in {dtype}; use a "
                                 f"larger {name}" + ("" if name == "eps" else " or 0"))

def check_across_groups(states, cfgs) -> None:
    """ValueError unless every group has its own state and no param or state array of
    one group shares memory with an array of another (grads with grads excepted). The
    result is kept in the first state's cache while every group's validation record (the
    checked arrays, see validate) is the same object."""
    records = [s.cache.get("validated_low_precision" if "validated_low_precision" in s.cache
                           else "validated_int8" if c.state_dtype is not None
                           else "validated") for s, c in zip(states, cfgs)]
    kept = states[0].cache.get("across_groups")
    if (kept is not None and len(kept) == len(states) + len(records)
            and all(map(operator.is_, kept, states + records))):
        return
    seen: dict = {}
    for i, state in enumerate(states):
        j = seen.setdefault(id(state), i)
        if j != i:
            raise ValueError(f"param_groups[{j}] and param_groups[{i}] share one state; each "
                             "group needs its own (backend.init_state)")
    names, arrays, written = [], [], []
    for i, (state, record) in enumerate(zip(states, records)):
        n = len(state.exp_avg)
        for k, a in enumerate(a for a in record["arrays"] if a is not None):
            names.append(f"param_groups[{i}] " + ("params" if k < n else "grads"
                                                  if k < 2 * n else "state") +
                         (f"[{k % n}]" if k < 2 * n else ""))
            arrays.append(a)
            written.append(not n <= k < 2 * n)
    starts = data_addresses(arrays)
    nbytes = np.array([a.size * a.dtype.itemsize for a in arrays], dtype=np.int64)
    pair = first_overlap(starts, starts + nbytes, np.array(written, dtype=bool))
    if pair is not None:
        raise ValueError(f"{names[pair[0]]} and {names[pair[1]]} share memory; a tensor "
                         "belongs to one param group, with memory of its own")
    states[0].cache["across_groups"] = states + records


def remembered(seen, cfg, arrays, state):
    """(plan, step) kept in a validation record ``seen`` ({"cfg", "arrays", "unchanged",
    "plan"}) when this step passes the very same arrays (by identity, headers unchanged)
    and config, else None: the int8 and low-precision steps' way past their checks."""
    if (seen is not None and cfg is seen["cfg"] and arrays is not None
            and len(arrays) == len(seen["arrays"])
            and all(map(operator.is_, arrays, seen["arrays"])) and seen["unchanged"]()):
        step = state.step
        if type(step) is not int or not 0 <= step <= MAX_STEP:
            step = checked_step(step)
        return seen["plan"], step
    return None


def headers(backend, arrays):
    """(ids, header table, unchanged() -> bool) of the validated arrays: NumPy array
    headers read in compiled code; other array types are trusted while the same
    objects come back."""
    if backend.array_type is np.ndarray:
        objects, headers = read_headers(arrays)
        return objects, headers, unchanged_check(objects, headers, arrays)
    return None, None, _trusted


def check_aliasing(backend, columns, params, names=COLUMN_NAMES) -> None:
    """ValueError naming two arrays that share memory, where one of them is written
    by the step (params and moments); grads may share memory with each other. One
    sort of the arrays' byte ranges: O(n log n)."""
    names = [(name, i) for name, column in zip(names, columns)
             for i in range(len(column))]
    arrays = [a for column in columns for a in column]
    itemsizes = [p.dtype.itemsize for p in params] * len(columns)
    starts = data_addresses(arrays)
    nbytes = np.array([a.size for a in arrays], dtype=np.int64) * itemsizes
    written = np.array([name != "grads" for name, _ in names])
    pair = first_overlap(starts, starts + nbytes, written)
    if pair is not None:
        (a, i), (b, j) = names[pair[0]], names[pair[1]]
        raise ValueError(f"{a}[{i}] and {b}[{j}] share memory; every param and state "
                         "moment needs memory of its own (grads may only share with "
                         "grads)")


def _check_writeable(backend, arrays, what) -> None:
    if all(map(backend._is_writeable, arrays)):
        return
    i = next(i for i, a in enumerate(arrays) if not backend._is_writeable(a))
    raise ValueError(f"{what}[{i}] is read-only; it must be writeable")


def _check_column(backend, arrays, name, params):
    if name == "params":
        check_tensors(backend, arrays, name)
    elif name == "grads":
        check_tensors(backend, arrays, name, like=params)
    else:
        _check_moment(backend, arrays, name, params)


def _check_moment(backend, arrays, what, params):
    if arrays is not None and not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{what} must be a list of arrays, got {type(arrays).__name__}")
    if arrays is None or len(arrays) != len(params):
        n = "none" if arrays is None else len(arrays)
        raise ValueError(f"{what} holds {n} tensors but params has {len(params)}: "
                         "the state was made for other tensors")
    check_tensors(backend, arrays, what, like=params)


def check_tensors(backend, arrays, what, like=None):
    for i, a in enumerate(arrays):
        if not isinstance(a, backend.array_type) or (isinstance(a, np.ndarray)
                                                  and type(a) is not np.ndarray):
            raise TypeError(f"{what}[{i}] is {_type_name(a)}; the {backend.name} backend needs "
                            f"{_type_name_of(backend.array_type)}, not a subclass (convert "
                            "with backend.asarray or np.asarray)")
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{what}[{i}] has dtype {a.dtype}; expected float32 or float64"
                            + (" (bfloat16 and float16 params need a state made for them "
                               "by init_state)" if a.dtype in LOW_PRECISION_DTYPES else ""))
        if like is not None:
            ref = like[i]
            if a.dtype != ref.dtype:
                raise TypeError(f"{what}[{i}] has dtype {a.dtype} but params[{i}] has "
                                f"{ref.dtype}")
            if tuple(a.shape) != tuple(ref.shape):
                raise ValueError(f"{what}[{i}] has shape {tuple(a.shape)} but params[{i}] "
                                 f"has {tuple(ref.shape)}")
        if not backend._is_contiguous(a):
            raise ValueError(f"{what}[{i}] is not C-contiguous; pass a contiguous array")
    if what != "grads":
        _check_writeable(backend, arrays, what)
    return arrays


def check_array(backend, a, what, dtype, shape) -> None:
    """TypeError or ValueError unless ``a`` (named ``what``) is a writeable C-contiguous
    array of ``backend``'s type with this dtype and shape (a state buffer)."""
    if not isinstance(a, backend.array_type):
        raise TypeError(f"{what} is {type(a).__name__}; the {backend.name} backend needs "
                        f"{backend.array_type.__name__}")
    if np.dtype(a.dtype) != np.dtype(dtype) or tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what} is {a.dtype} {tuple(a.shape)}; expected "
                         f"{np.dtype(dtype)} {tuple(shape)}")
    if not backend._is_contiguous(a):
        raise ValueError(f"{what} is not C-contiguous")
    if not backend._is_writeable(a):
        raise ValueError(f"{what} is read-only; it must be writeable")


def _trusted() -> bool:
    return True


def _same_arrays(arrays, old) -> bool:
    return (old is not None and isinstance(arrays, (list, tuple)) and len(arrays) == len(old)
            and all(map(operator.is_, arrays, old)))


def _changed_in_place(seen, arrays, c) -> bool:
    """Whether column ``c``, the same array objects as when it was checked, has an array
    whose header (dtype, shape, flags, address) changed since (NumPy arrays only)."""
    if seen["headers"] is None:
        return False
    start = sum(len(col) for col in seen["columns"][:c] if col is not None)
    rows = slice(start, start + len(arrays))
    return not headers_match(seen["objects"][rows], seen["headers"][rows], arrays)


def as_list(arrays, what) -> list:
    """A single array as [array]; a list as it is (it is only read); other sequences copied."""
    if type(arrays) is list:
        return arrays
    if type(arrays) is np.ndarray:
        return [arrays]
    if hasattr(arrays, "shape") and hasattr(arrays, "dtype"):
        return [arrays]
    if not isinstance(arrays, Sequence) or isinstance(arrays, (str, bytes)):
        raise TypeError(f"{what} must be an array or a sequence of arrays, "
                        f"got {type(arrays).__name__}")
    return list(arrays)


def _type_name_of(cls: type) -> str:
    return f"{cls.__module__.split('.')[0]}.{cls.__name__}"


def _type_name(x) -> str:
    return _type_name_of(type(x))
