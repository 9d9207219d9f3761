"""The Backend base: one validated ``step`` in front of each backend's fused update.

Every check happens here, before any array is touched, so a failed call leaves
parameters and state exactly as they were. Backends implement ``_update`` only.
"""
from __future__ import annotations

import dataclasses
import inspect
import operator
import weakref
from collections.abc import Sequence

import numpy as np

from .config import AdamConfig, checked_lr
from .state import MAX_STEP, AdamState, checked_step, to_host

__all__ = ["Backend", "BackendUnavailable", "FLOAT_DTYPES"]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_COLUMN_NAMES = ("params", "grads", "state.exp_avg", "state.exp_avg_sq",
                 "state.max_exp_avg_sq")


class BackendUnavailable(RuntimeError):
    """A registered backend that cannot run here; the message says why."""


class Backend:
    """One Adam implementation. Subclasses set ``name``, ``device``, ``array_type`` and
    implement ``_update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
    cache, lr=None)``, which receives same-dtype lists and updates them in place as step
    ``t`` (1-based) at learning rate ``lr`` (None: ``cfg.lr``; ``StepScalars.for_step(cfg,
    t, lr)`` gives the kernel's scalars); ``cache`` is the state's dict for derived data
    the backend wants to keep between steps. An ``_update`` without the ``lr`` parameter
    (older plugins) is given a config with the step's lr instead.
    """

    name: str = ""
    device: str = "cpu"
    array_type: type = np.ndarray
    #: Whether ``_update_quantized`` implements 8-bit state (``state_dtype="int8"``).
    supports_int8_state: bool = False

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run here, or None when it can."""
        return None

    # --- arrays -------------------------------------------------------------------------
    def asarray(self, a) -> np.ndarray:
        """Host NumPy array -> this backend's array type (no copy on CPU backends)."""
        return np.asarray(a)

    def to_numpy(self, x) -> np.ndarray:
        """This backend's array -> host NumPy array."""
        return to_host(x)

    def synchronize(self) -> None:
        """Wait until queued device work is finished (no-op on the CPU)."""

    #: x -> whether x may be written (a C-level getter: it runs for every param each step)
    _is_writeable = staticmethod(operator.attrgetter("flags.writeable"))

    def _is_contiguous(self, x) -> bool:
        return bool(x.flags.c_contiguous)

    # --- state --------------------------------------------------------------------------
    def empty(self, n: int, dtype):
        """An uninitialized 1-D array of this backend's type."""
        return np.empty(n, dtype=dtype)

    def flatten(self, arrays) -> tuple:
        """(flat, views): host arrays copied into one buffer of this backend's type, and a
        view of it per array, in order.

        Params that are such views (and grads that are views of a second flat buffer) are
        stepped as one contiguous tensor: one kernel call whatever the number of tensors.
        """
        arrays = [np.asarray(a) for a in arrays]
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) > 1:
            raise TypeError(f"flatten needs arrays of one dtype, got {sorted(map(str, dtypes))}")
        if not arrays:
            return self.asarray(np.zeros(0, dtype=np.float32)), []
        flat = self.asarray(np.concatenate([a.reshape(-1) for a in arrays]))
        return flat, _views(flat, [a.shape for a in arrays])

    def init_state(self, params, cfg: AdamConfig | None = None) -> AdamState:
        """Zero moments for ``params``; ``max_exp_avg_sq`` too when ``cfg.amsgrad``. Each
        moment's tensors are views into one buffer per dtype, back to back."""
        params = self._check_tensors(_as_list(params, "params"), "params")
        amsgrad = cfg is not None and cfg.amsgrad
        if cfg is not None and cfg.state_dtype == "int8":
            from .blockwise import init_quantized_state
            from .quantized_step import require_int8_support

            require_int8_support(self, params)
            return init_quantized_state(self, params, amsgrad)
        return AdamState(
            step=0,
            exp_avg=self._zeros_views(params),
            exp_avg_sq=self._zeros_views(params),
            max_exp_avg_sq=self._zeros_views(params) if amsgrad else None,
        )

    def _zeros_views(self, params) -> list:
        views = [None] * len(params)
        for dtype, idx in _group_by_dtype(params).items():
            flat = self.empty(sum(int(params[i].size) for i in idx), dtype)
            flat[:] = 0
            for i, view in zip(idx, _views(flat, [params[i].shape for i in idx])):
                views[i] = view
        return views

    def state_from_dict(self, d: dict) -> AdamState:
        """An AdamState of this backend's arrays from ``AdamState.to_dict`` output."""
        host = AdamState.from_dict(d)

        def convert(arrays):
            if arrays is None:
                return None
            if any(a is None for a in arrays) or len({a.dtype for a in arrays}) > 1:
                return [None if a is None else self.asarray(a) for a in arrays]
            return self.flatten(arrays)[1]

        return AdamState(host.step, convert(host.exp_avg), convert(host.exp_avg_sq),
                         convert(host.max_exp_avg_sq), convert(host.exp_avg_scale),
                         convert(host.exp_avg_sq_scale), convert(host.max_exp_avg_sq_scale))

    # --- the step -----------------------------------------------------------------------
    def step(self, params, grads, state: AdamState, cfg: AdamConfig, lr=None) -> None:
        """One Adam step of every tensor, in place; ``state.step`` goes up by one (a
        Python int from then on).

        ``lr``, when given, is this step's learning rate in place of ``cfg.lr`` (a
        schedule): checked as ``cfg.lr`` is (finite, >= 0) before anything changes, and
        nothing else is checked again or rebuilt for it (the arrays' checks are kept by
        config identity, so a schedule keeps one config and passes ``lr``)."""
        apply, arguments = self._prepare(params, grads, state, cfg, lr)
        apply(*arguments)

    def step_groups(self, groups) -> None:
        """One step of several param groups, each ``(params, grads, state, cfg, lr)``
        (``lr`` may be None) and each stepped as ``step`` steps it, in one dispatch: every
        group is checked before any array changes, and no param or state array may share
        memory with another group's arrays (grads may share with grads). An error names
        the group: ``param_groups[i]: ...``."""
        groups = list(groups)
        plans = []
        for i, group in enumerate(groups):
            try:
                plans.append(self._prepare(*group))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"param_groups[{i}]: {exc}") from None
        if len(groups) > 1:
            _check_across_groups([group[2] for group in groups], [group[3] for group in groups])
        for apply, arguments in plans:
            apply(*arguments)

    def _prepare(self, params, grads, state, cfg, lr) -> tuple:
        """(apply, arguments): every check of one step has passed and ``apply(*arguments)``
        runs it."""
        if lr is not None:
            lr = checked_lr(lr)
        if isinstance(cfg, AdamConfig) and cfg.state_dtype is not None:
            from .quantized_step import apply_quantized, prepare_quantized

            return apply_quantized, (self, *prepare_quantized(self, params, grads, state, cfg),
                                     state, cfg, lr)
        params, grads, groups, step = self._validate(params, grads, state, cfg)
        return self._apply_update, (params, grads, groups, step, state, cfg, lr)

    def _apply_update(self, params, grads, groups, step, state, cfg, lr) -> None:
        t = step + 1
        amax = state.max_exp_avg_sq if cfg.amsgrad else None
        if len(groups) == 1:
            for dtype in groups:
                self._call_update(params, grads, state.exp_avg, state.exp_avg_sq, amax, cfg,
                                  t, dtype, state.cache, lr)
        else:
            columns = (params, grads, state.exp_avg, state.exp_avg_sq, amax)
            for dtype, idx in groups.items():
                pick = [None if c is None else [c[i] for i in idx] for c in columns]
                self._call_update(*pick, cfg, t, dtype, state.cache, lr)
        state.step = t

    #: Whether ``_update`` / ``_update_quantized`` take the step's ``lr`` (set per class
    #: from their signatures): a subclass written without it gets a config whose lr is
    #: the step's instead (one per learning rate, kept while it repeats).
    _update_takes_lr = True
    _update_quantized_takes_lr = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._update_takes_lr = _takes_lr(cls._update)
        cls._update_quantized_takes_lr = _takes_lr(cls._update_quantized)

    def _call_update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t,
                     dtype, cache, lr) -> None:
        """``_update`` at learning rate ``lr`` (None: cfg.lr)."""
        if lr is None:
            self._update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                         cache)
        elif self._update_takes_lr:
            self._update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                         cache, lr=lr)
        else:
            self._update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq,
                         _config_with_lr(cfg, lr, cache), t, dtype, cache)

    def _call_update_quantized(self, p, g, moments, cfg, t, cache, lr) -> None:
        """``_update_quantized`` at learning rate ``lr`` (None: cfg.lr)."""
        if lr is None:
            self._update_quantized(p, g, moments, cfg, t)
        elif self._update_quantized_takes_lr:
            self._update_quantized(p, g, moments, cfg, t, lr=lr)
        else:
            self._update_quantized(p, g, moments, _config_with_lr(cfg, lr, cache), t)

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq,
                cfg: AdamConfig, t: int, dtype: np.dtype, cache: dict, lr=None) -> None:
        raise NotImplementedError

    def _update_quantized(self, p, g, moments, cfg: AdamConfig, t: int, lr=None) -> None:
        """Step ``t`` of one quantized float32 tensor (1-D ``p`` and ``g``) in place;
        ``moments`` holds (codes, scales) of m, v and, with amsgrad, the running maximum
        (else None). See ``backends.blockwise`` for the algorithm."""
        raise NotImplementedError

    # --- copies -------------------------------------------------------------------------
    def _options(self) -> dict:
        """The constructor's keyword arguments that made this backend (for pickling)."""
        return {}

    def __reduce__(self):
        """Pickled as its class and options, and made afresh on load (kernels compiled or
        loaded from cache): a backend holds modules, pools and compiled code."""
        return _remake, (type(self), self._options())

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        """Shared, not copied: a backend keeps nothing of any one optimizer (that lives in
        the AdamState), so copies of an optimizer step independently through it."""
        return self

    # --- validation ---------------------------------------------------------------------
    def _validate(self, params, grads, state, cfg):
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
            params = [params] if type(params) is np.ndarray else _as_list(params, "params")
        if type(grads) is not list:
            grads = [grads] if type(grads) is np.ndarray else _as_list(grads, "grads")
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
        return self._validate_changed(params, grads, state, cfg, columns, step, seen)

    def _validate_changed(self, params, grads, state, cfg, columns, step, seen):
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
                self._check_column(arrays, _COLUMN_NAMES[c], params)
                stale.append(c)
        groups = seen["groups"] if seen is not None and 0 not in stale else \
            _group_by_dtype(params)
        self._check_config(groups, cfg)
        present = [c for c in columns if c is not None]
        if stale:
            self._check_aliasing(present, params)
        # every check passed: from here on, state may change
        if cfg.amsgrad and state.max_exp_avg_sq is None:
            state.max_exp_avg_sq = self._zeros_views(params)
            present.append(state.max_exp_avg_sq)
            stale.append(4)
        new_columns = [list(column) if c in stale else old[c] for c, column in enumerate(present)]
        new_columns += [None] * (5 - len(new_columns))
        arrays = [a for c in present for a in c]
        objects, headers, unchanged = self._headers(arrays)
        state.cache["validated"] = {
            "arrays": arrays, "weakrefs": _weak_references(arrays),
            "lengths": tuple(len(c) for c in present) + ((-1,) if len(present) == 4 else ()),
            "columns": new_columns, "cfg": cfg, "groups": groups, "key": object(),
            "objects": objects, "headers": headers, "unchanged": unchanged}
        return params, grads, groups, step

    def check_state(self, params, state: AdamState, cfg: AdamConfig) -> None:
        """Every check ``step`` makes of params, state and config (not of gradients), and
        nothing changed: for restoring a state before its first step."""
        if isinstance(cfg, AdamConfig) and cfg.state_dtype is not None:
            from .quantized_step import check_quantized

            check_quantized(self, params, None, state, cfg)
            return
        if type(state) is not AdamState and not isinstance(state, AdamState):
            raise TypeError(f"state must be an AdamState, got {type(state).__name__}")
        checked_step(state.step)
        params = _as_list(params, "params")
        if cfg.amsgrad and state.max_exp_avg_sq is None and state.step != 0:
            raise ValueError("amsgrad=True but state has no max_exp_avg_sq: it was "
                             "stepped with amsgrad=False")
        columns = [params, state.exp_avg, state.exp_avg_sq]
        if cfg.amsgrad and state.max_exp_avg_sq is not None:
            columns.append(state.max_exp_avg_sq)
        self._check_tensors(params, "params")
        for name, arrays in zip(_COLUMN_NAMES[2:], columns[1:]):
            self._check_moment(arrays, name, params)
        self._check_config(_group_by_dtype(params), cfg)
        self._check_aliasing(columns, params, names=("params",) + _COLUMN_NAMES[2:])

    @staticmethod
    def _check_config(groups, cfg) -> None:
        """eps and weight_decay must not round to 0 in any dtype stepped (the kernels
        compute in the arrays' dtype)."""
        for dtype in groups:
            for name in ("eps", "weight_decay"):
                value = getattr(cfg, name)
                if value != 0 and dtype.type(value) == 0:
                    raise ValueError(f"{name}={value!r} rounds to 0 in {dtype}; use a "
                                     f"larger {name}" + ("" if name == "eps" else " or 0"))

    def _headers(self, arrays):
        """(ids, header table, unchanged() -> bool) of the validated arrays: NumPy array
        headers read in compiled code; other array types are trusted while the same
        objects come back."""
        if self.array_type is np.ndarray:
            from ._array_headers import read_headers, unchanged_check

            objects, headers = read_headers(arrays)
            return objects, headers, unchanged_check(objects, headers, arrays)
        return None, None, _trusted

    def _check_aliasing(self, columns, params, names=_COLUMN_NAMES) -> None:
        """ValueError naming two arrays that share memory, where one of them is written
        by the step (params and moments); grads may share memory with each other. One
        sort of the arrays' byte ranges: O(n log n)."""
        names = [(name, i) for name, column in zip(names, columns)
                 for i in range(len(column))]
        arrays = [a for column in columns for a in column]
        itemsizes = [p.dtype.itemsize for p in params] * len(columns)
        starts = np.array([_data_address(a) for a in arrays], dtype=np.int64)
        nbytes = np.array([a.size for a in arrays], dtype=np.int64) * itemsizes
        written = np.array([name != "grads" for name, _ in names])
        pair = _first_overlap(starts, starts + nbytes, written)
        if pair is not None:
            (a, i), (b, j) = names[pair[0]], names[pair[1]]
            raise ValueError(f"{a}[{i}] and {b}[{j}] share memory; every param and state "
                             "moment needs memory of its own (grads may only share with "
                             "grads)")

    def _check_writeable(self, arrays, what) -> None:
        if all(map(self._is_writeable, arrays)):
            return
        i = next(i for i, a in enumerate(arrays) if not self._is_writeable(a))
        raise ValueError(f"{what}[{i}] is read-only; it must be writeable")

    def _check_column(self, arrays, name, params):
        if name == "params":
            self._check_tensors(arrays, name)
        elif name == "grads":
            self._check_tensors(arrays, name, like=params)
        else:
            self._check_moment(arrays, name, params)

    def _check_moment(self, arrays, what, params):
        if arrays is not None and not isinstance(arrays, (list, tuple)):
            raise TypeError(f"{what} must be a list of arrays, got {type(arrays).__name__}")
        if arrays is None or len(arrays) != len(params):
            n = "none" if arrays is None else len(arrays)
            raise ValueError(f"{what} holds {n} tensors but params has {len(params)}: "
                             "the state was made for other tensors")
        self._check_tensors(arrays, what, like=params)

    def _check_tensors(self, arrays, what, like=None):
        for i, a in enumerate(arrays):
            if not isinstance(a, self.array_type) or (isinstance(a, np.ndarray)
                                                      and type(a) is not np.ndarray):
                raise TypeError(f"{what}[{i}] is {_type_name(a)}; the {self.name} backend needs "
                                f"{_type_name_of(self.array_type)}, not a subclass (convert "
                                "with backend.asarray or np.asarray)")
            if a.dtype not in FLOAT_DTYPES:
                raise TypeError(f"{what}[{i}] has dtype {a.dtype}; expected float32 or float64")
            if like is not None:
                ref = like[i]
                if a.dtype != ref.dtype:
                    raise TypeError(f"{what}[{i}] has dtype {a.dtype} but params[{i}] has "
                                    f"{ref.dtype}")
                if tuple(a.shape) != tuple(ref.shape):
                    raise ValueError(f"{what}[{i}] has shape {tuple(a.shape)} but params[{i}] "
                                     f"has {tuple(ref.shape)}")
            if not self._is_contiguous(a):
                raise ValueError(f"{what}[{i}] is not C-contiguous; pass a contiguous array")
        if what != "grads":
            self._check_writeable(arrays, what)
        return arrays


def _takes_lr(method) -> bool:
    parameters = inspect.signature(method).parameters.values()
    return any(p.name == "lr" or p.kind is p.VAR_KEYWORD for p in parameters)


def _config_with_lr(cfg: AdamConfig, lr: float, cache: dict) -> AdamConfig:
    """``cfg`` with this ``lr``, for an ``_update`` that reads lr from its config; the
    last one is kept in ``cache``, so a repeated lr makes no new config."""
    last = cache.get("config_with_lr")
    if last is None or last[0] is not cfg or last[1] != lr:
        last = cache["config_with_lr"] = (cfg, lr, dataclasses.replace(cfg, lr=lr))
    return last[2]


def _check_across_groups(states, cfgs) -> None:
    """ValueError unless every group has its own state and no param or state array of
    one group shares memory with an array of another (grads with grads excepted). The
    result is kept in the first state's cache while every group's validation record (the
    checked arrays, see Backend._validate) is the same object."""
    records = [s.cache.get("validated_int8" if c.state_dtype is not None else "validated")
               for s, c in zip(states, cfgs)]
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
    starts = np.array([_data_address(a) for a in arrays], dtype=np.int64)
    nbytes = np.array([a.size * a.dtype.itemsize for a in arrays], dtype=np.int64)
    pair = _first_overlap(starts, starts + nbytes, np.array(written, dtype=bool))
    if pair is not None:
        raise ValueError(f"{names[pair[0]]} and {names[pair[1]]} share memory; a tensor "
                         "belongs to one param group, with memory of its own")
    states[0].cache["across_groups"] = states + records


def _remake(cls, options):
    return cls(**options)


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
    from ._array_headers import headers_match

    return not headers_match(seen["objects"][rows], seen["headers"][rows], arrays)


def _weak_references(arrays) -> list:
    """Weak references to NumPy arrays: NumPy refuses to resize an array that has one,
    even with ``refcheck=False``, so a remembered address cannot be freed under us."""
    return [weakref.ref(a) for a in arrays if isinstance(a, np.ndarray)]


def _data_address(a) -> int:
    interface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    return int(interface["data"][0])


def _first_overlap(starts, stops, written):
    """Indices (i, j) of two byte ranges [start, stop) that overlap, at least one of them
    written, or None. Ranges sorted by start: a range overlaps an earlier one exactly when
    it starts before the largest stop so far (of the written ones, for a read-only one)."""
    nonempty = np.flatnonzero(stops > starts)
    order = nonempty[np.argsort(starts[nonempty], kind="stable")]
    s, e, w = starts[order], stops[order], written[order]
    lowest = np.iinfo(np.int64).min
    before_all = np.maximum.accumulate(np.concatenate(([lowest], e[:-1])))
    before_written = np.maximum.accumulate(np.concatenate(([lowest], np.where(w, e, lowest)[:-1])))
    clash = np.flatnonzero(s < np.where(w, before_all, before_written))
    if clash.size == 0:
        return None
    k = clash[0]
    earlier = np.flatnonzero((e[:k] > s[k]) & (w[:k] | w[k]))
    return int(order[earlier[0]]), int(order[k])


def _as_list(arrays, what) -> list:
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


def first_of_contiguous(starts, sizes, itemsize: int) -> int | None:
    """Index of the first non-empty tensor when the non-empty tensors (first-element
    addresses ``starts``, element counts ``sizes``) lie back to back in memory, else None.
    Empty tensors are skipped: their address can be anything."""
    starts = np.asarray(starts, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    nonempty = np.flatnonzero(sizes)
    if nonempty.size == 0:
        return None
    starts, sizes = starts[nonempty], sizes[nonempty]
    if np.any(starts[1:] != starts[:-1] + sizes[:-1] * itemsize):
        return None
    return int(nonempty[0])


def _views(flat, shapes) -> list:
    views, start = [], 0
    for shape in shapes:
        n = int(np.prod(shape, dtype=np.int64))
        views.append(flat[start:start + n].reshape(shape))
        start += n
    return views


def _group_by_dtype(params) -> dict:
    groups: dict = {}
    for i, p in enumerate(params):
        groups.setdefault(p.dtype, []).append(i)
    return groups


def _type_name_of(cls: type) -> str:
    return f"{cls.__module__.split('.')[0]}.{cls.__name__}"


def _type_name(x) -> str:
    return _type_name_of(type(x))
