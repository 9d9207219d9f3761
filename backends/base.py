"""The Backend contract: one validated ``step`` in front of each backend's fused update.

A backend implements ``_update`` (and ``_update_int8`` for int8 state); everything
else is here, with the helpers in modules of their own: the checks (``validation``,
before any array is touched, so a failed call leaves parameters and state exactly as they
were), the state's buffers (``memory``), the calls into ``_update`` (``update_calls``),
and the int8 and low-precision steps (``int8_step``, ``low_precision_step``).
"""
from __future__ import annotations

import operator

import numpy as np

from . import memory, validation
from .config import AdamConfig, checked_lr
from .formats import step_stream, tensor_key, uses_low_precision
from .int8_codec import init_int8_state
from .int8_step import apply_int8, check_int8, prepare_int8, require_int8_support
from .state import ARRAY_FIELDS, AdamState, to_host
from .update_calls import apply_full_precision, takes_lr
from .validation import as_list, check_across_groups, check_tensors

__all__ = ["Backend", "BackendUnavailable"]


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
    #: Whether ``_update_int8`` implements int8 state (``state_dtype="int8"``).
    supports_int8_state: bool = False
    #: Whether the backend steps low-precision params and state: ``_update_low_precision``
    #: implements them (or, as numba's, the plan hooks below do without it).
    supports_low_precision: bool = False

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
        return memory.flatten(self, arrays)

    def init_state(self, params, cfg: AdamConfig | None = None) -> AdamState:
        """Zero moments for ``params``; ``max_exp_avg_sq`` too when ``cfg.amsgrad``. Each
        moment's tensors are views into one buffer per dtype, back to back."""
        params = as_list(params, "params")
        if uses_low_precision(cfg or AdamConfig(), params, None):
            from .low_precision_step import init_low_precision_state

            return init_low_precision_state(self, params, cfg or AdamConfig())
        params = check_tensors(self, params, "params")
        amsgrad = cfg is not None and cfg.amsgrad
        if cfg is not None and cfg.state_dtype == "int8":
            require_int8_support(self, params)
            return init_int8_state(self, params, amsgrad)
        return AdamState(
            step=0,
            exp_avg=self._zeros_views(params),
            exp_avg_sq=self._zeros_views(params),
            max_exp_avg_sq=self._zeros_views(params) if amsgrad else None,
        )

    def _zeros_views(self, params) -> list:
        """Zero moments for ``params``: views of one buffer per dtype."""
        return memory.zero_views(self, params)

    def state_from_dict(self, d: dict) -> AdamState:
        """An AdamState of this backend's arrays from ``AdamState.to_dict`` output."""
        host = AdamState.from_dict(d)
        return AdamState(host.step, **{name: memory.to_backend(self, getattr(host, name))
                                       for name in ARRAY_FIELDS})

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
            check_across_groups([group[2] for group in groups], [group[3] for group in groups])
        for apply, arguments in plans:
            apply(*arguments)

    def _prepare(self, params, grads, state, cfg, lr) -> tuple:
        """(apply, arguments): every check of one step has passed and ``apply(*arguments)``
        runs it."""
        if lr is not None:
            lr = checked_lr(lr)
        if isinstance(cfg, AdamConfig) and uses_low_precision(cfg, params, state):
            from .low_precision_step import apply_low_precision, prepare_low_precision

            return apply_low_precision, (self, *prepare_low_precision(
                self, params, grads, state, cfg), state, cfg, lr)
        if isinstance(cfg, AdamConfig) and cfg.state_dtype is not None:
            return apply_int8, (self, *prepare_int8(self, params, grads, state, cfg),
                                     state, cfg, lr)
        params, grads, groups, step = self._validate(params, grads, state, cfg)
        return apply_full_precision, (self, params, grads, groups, step, state, cfg, lr)

    #: Whether ``_update`` / ``_update_int8`` take the step's ``lr`` (set per class from
    #: their signatures; ``backends.update_calls`` gives the others a config with it).
    _update_takes_lr = True
    _update_int8_takes_lr = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._update_takes_lr = takes_lr(cls._update)
        cls._update_int8_takes_lr = takes_lr(cls._update_int8)

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq,
                cfg: AdamConfig, t: int, dtype: np.dtype, cache: dict, lr=None) -> None:
        raise NotImplementedError

    def _update_int8(self, p, g, moments, cfg: AdamConfig, t: int, lr=None) -> None:
        """Step ``t`` of one float32 tensor with int8 state (1-D ``p`` and ``g``) in place;
        ``moments`` holds (codes, scales) of m, v and, with amsgrad, the running maximum
        (else None). See ``backends.int8_codec`` for the algorithm."""
        raise NotImplementedError

    def _update_low_precision(self, p, g, m, v, vmax, master, compensation, cfg: AdamConfig,
                              t: int, key: int | None, lr=None) -> None:
        """Step ``t`` of one tensor with low-precision params or state (1-D arrays, see
        ``backends.low_precision_step``) at learning rate ``lr`` (None: cfg.lr): ``vmax``,
        ``master`` and ``compensation`` are None when not used; ``key`` is the tensor's
        ``formats.stream_key`` with stochastic rounding, else None."""
        raise NotImplementedError

    def _low_precision_array(self, a):
        """The array a low-precision plan hands ``_update_low_precision`` for ``a`` (one of
        a tensor's p, g, m, v, vmax, master, compensation): ``a``, unless a backend
        converts it once per plan rather than every step (numba, the GPUs: bfloat16 as
        its uint16 bits)."""
        return a

    def _low_precision_arrays(self, tensors: tuple) -> tuple:
        """``_low_precision_array`` of each of a tensor's arrays (None stays None)."""
        return tuple(None if a is None else self._low_precision_array(a) for a in tensors)

    def _low_precision_plan(self, tensors: list, cfg: AdamConfig):
        """What ``_update_low_precision_plan`` steps, made once per validated step (and
        kept while the same arrays come back) from [(tensor index, arrays of
        ``_low_precision_arrays``)] of the non-empty tensors: that list, unless a backend
        prepares more (numba: address tables)."""
        return tensors

    def _low_precision_new_grads(self, plan, tensors: list, cfg: AdamConfig):
        """The plan of ``tensors`` (``_low_precision_plan``'s argument) when only their
        grads differ from those ``plan`` was made of (a training loop's fresh gradients):
        a new plan, unless a backend re-points the old one (numba: its tables' grad
        addresses)."""
        return self._low_precision_plan(tensors, cfg)

    def _update_low_precision_plan(self, plan, cfg: AdamConfig, t: int, lr=None) -> None:
        """Step ``t`` of every tensor of ``plan`` (``_low_precision_plan``'s) at learning
        rate ``lr``. Here: each tensor through ``_update_low_precision`` with its key
        ``formats.stream_key(seed, t, index)`` when the rounding is stochastic."""
        stream = step_stream(cfg.seed, t) if cfg.rounding == "stochastic" else None
        for index, tensors in plan:
            key = None if stream is None else tensor_key(stream, index)
            self._update_low_precision(*tensors, cfg, t, key, lr=lr)

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
    #: (params, grads, {dtype: tensor indices}, step as an int) after every check, or an
    #: exception (``validation.validate``, a method here so a test backend can replace it).
    _validate = validation.validate

    def check_state(self, params, state: AdamState, cfg: AdamConfig) -> None:
        """Every check ``step`` makes of params, state and config (not of gradients), and
        nothing changed: for restoring a state before its first step."""
        if isinstance(cfg, AdamConfig) and uses_low_precision(cfg, params, state):
            from .low_precision_step import check_low_precision

            check_low_precision(self, params, None, state, cfg)
            return
        if isinstance(cfg, AdamConfig) and cfg.state_dtype is not None:
            check_int8(self, params, None, state, cfg)
        else:
            validation.check_state(self, params, state, cfg)


def _remake(cls, options):
    return cls(**options)
