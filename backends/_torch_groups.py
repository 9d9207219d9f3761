"""Stepping one torch.optim param group: a plan made once, a cheap check each step.

A plan (``_Plan``) holds what a group looked like when it was last checked in full: its
params and their data pointers, which of them had gradients, the gradients' shapes,
dtypes and pointers, the state tensors, and the dispatches (params of one dtype and one
step count, stepped in one call). Each step compares the group with the plan (identities
and pointers, a few C-level ``map`` calls): a rebound ``param.data``, a gradient that
appears or vanishes, or anything that fails the cheap test makes a new plan, which checks
everything again (``backends._torch_tensors``) and raises the named error, if any,
before anything changes. New gradient tensors of the planned shape, dtype and device
(``zero_grad(set_to_none=True)``, the default) only replace the gradient pointers.

Step counters stay in torch.optim.Adam's format (``state[p]["step"]``, a float32 0-d
tensor) as views of one tensor per group, advanced in one compiled call.

The state tensors of a param are what the NumPy-level state holds for it under the
group's AdamConfig (``_torch_tensors.state_layout``): moments in the params' dtype, or in
``state_dtype``'s (int8 codes with their ``*_scale`` blocks), ``master_params`` and
``compensation`` when the options ask for them.

Two kinds of dispatch: ``_TableDispatch`` (``TableStepper``, float32 and float64 params
without state or rounding options) hands the addresses straight to the Numba
address-table kernel (no array objects per step); ``_ArrayDispatch`` (every other case,
every backend) runs ``Backend.step`` on zero-copy array views (NumPy for CPU tensors,
bfloat16 as ml_dtypes' bfloat16; CuPy or Numba for CUDA ones), so low-precision params
and state step bit for bit as the NumPy-level ``backends.Adam`` steps them.
"""
from __future__ import annotations

import operator
from itertools import groupby

import numpy as np
import torch
from numba import njit

from .config import AdamConfig, checked_lr
from .state import AdamState
from .int8_codec import SCALE_NAMES
from ._torch_tensors import (FLOAT_DTYPES, array_view, check_grad, check_options,
                             check_param, check_tensor_of, has_options, new_state,
                             state_layout, torch_dtype, where)

__all__ = ["GroupStepper", "TableStepper", "config_of"]

_GRAD = operator.attrgetter("grad")
_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")
_DEVICE_INDEX = torch.Tensor.get_device  # an int: half the cost of a torch.device
_DATA_PTR = torch.Tensor.data_ptr
_IS_CONTIGUOUS = torch.Tensor.is_contiguous
#: State entries a checkpoint may lack (torch.optim.Adam's has neither): made afresh, as
#: for a new param (the master copy from the param, zero compensation).
_FRESH = ("master_params", "compensation")
#: Dtypes the Numba address-table kernel steps (without state_dtype or rounding options).
_TABLE_DTYPES = (torch.float32, torch.float64)


def config_of(group: dict, i: int, lr: float | None = None,
              options: dict | None = None) -> AdamConfig:
    """The AdamConfig of param group ``i`` (its ``lr`` unless one is given) with the
    optimizer's ``options`` (state_dtype, master_weights, rounding, seed); a bad value
    raises naming the group."""
    try:
        beta1, beta2 = group["betas"]
        return AdamConfig(lr=_real(group["lr"]) if lr is None else lr, beta1=_real(beta1),
                          beta2=_real(beta2), eps=_real(group["eps"]),
                          weight_decay=_real(group["weight_decay"]),
                          decoupled=bool(group["decoupled_weight_decay"]),
                          amsgrad=bool(group["amsgrad"]), maximize=bool(group["maximize"]),
                          **(options or {}))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"param_groups[{i}]: {exc}") from None


def _real(value):
    """A 0-d (or one-element) tensor as a float; anything else as it is."""
    return value.item() if isinstance(value, torch.Tensor) else value


def _settings(group: dict) -> tuple:
    """Every hyperparameter but lr, as a group holds it (compared each step)."""
    return (group["betas"], group["eps"], group["weight_decay"], group["amsgrad"],
            group["maximize"], group["decoupled_weight_decay"])


@njit(cache=True)
def _advance(steps, members, bounds, t):
    """steps[members] += 1 (in the counters' float32, as torch counts); ``t[d]`` is the new
    step of dispatch d (members[bounds[d]:bounds[d + 1]]). False if a dispatch's counters
    now differ (one was changed in place): the dispatches must be made again."""
    uniform = True
    for d in range(bounds.size - 1):
        first = steps[members[bounds[d]]] + 1
        t[d] = np.int64(first)
        for k in range(bounds[d], bounds[d + 1]):
            steps[members[k]] += 1
            uniform &= steps[members[k]] == first
    return uniform


class _Plan:
    """A group as last checked in full (see the module docstring); ``pending`` holds the
    state entries to write when the step runs (new moments, step views)."""

    def __init__(self, params, active, grads, fields, steps, pending, state):
        self.params = list(params)
        self.param_ptrs = list(map(_DATA_PTR, params))
        self.active = active                      # indices with a gradient; None: all
        self.grads = grads
        self.grad_ptrs = list(map(_DATA_PTR, grads))
        self.grad_dtypes = list(map(_DTYPE, grads))
        stepped = params if active is None else [params[j] for j in active]
        self.stepped = stepped
        self.shapes = list(map(_SHAPE, stepped))
        self.dtypes = list(map(_DTYPE, stepped))
        self.devices = list(map(_DEVICE_INDEX, stepped))
        self.fields = fields                      # per stepped param: {state key: tensor}
        self.steps = steps                        # float32, one counter per group param
        self.steps_np = steps.numpy()
        self.pending = pending
        self.state = state
        self.dispatches: list = []
        self.members = self.bounds = self.t = None

    def grads_fit(self, grads) -> bool:
        """New gradient tensors that can take the planned ones' place: same shapes,
        dtypes and device indices, contiguous (so also dense). The device's type needs
        no test: the ``.grad`` setter and ``.data =`` refuse a tensor of another."""
        return (list(map(_SHAPE, grads)) == self.shapes
                and list(map(_DTYPE, grads)) == self.grad_dtypes
                and all(map(_IS_CONTIGUOUS, grads))
                and list(map(_DEVICE_INDEX, grads)) == self.devices)


class GroupStepper:
    """Steps one param group: any backend's ``step`` over zero-copy array views of the
    tensors (``_ArrayDispatch``); TableStepper feeds Numba's kernel pointers instead."""

    def __init__(self, backend, options: dict):
        self.backend = backend
        self.options = options
        self.plan: _Plan | None = None
        self.lr = None
        self.settings = None
        self.cfg: AdamConfig | None = None

    # --- each step -----------------------------------------------------------------------
    def prepare(self, group: dict, i: int, state) -> "callable":
        """Check group ``i`` against the plan (making a new one if it changed); returns
        the step to run. Changes nothing."""
        self._check_settings(group, i)
        params = group["params"]
        grads = list(map(_GRAD, params))
        plan = self.plan
        if (plan is None or len(params) != len(plan.params)
                or not all(map(operator.is_, params, plan.params))
                or list(map(_DATA_PTR, params)) != plan.param_ptrs):
            return self._replan(group, i, state, grads)
        ptrs = _pointers(grads)
        if ptrs is None or plan.active is not None:  # a None (or sparse) gradient
            active = [j for j, g in enumerate(grads) if g is not None]
            if active != (plan.active if plan.active is not None else list(range(len(params)))):
                return self._replan(group, i, state, grads)
            grads = [grads[j] for j in active]
            ptrs = _pointers(grads)
            if ptrs is None:
                return self._replan(group, i, state, grads)
        if ptrs != plan.grad_ptrs or not all(map(operator.is_, grads, plan.grads)):
            if not plan.grads_fit(grads):
                return self._replan(group, i, state, list(map(_GRAD, params)))
            self._new_grads(plan, grads, ptrs)
        return self._run

    def check_state(self, group: dict, i: int, state) -> None:
        """Every check a step makes of group ``i``'s settings, params and state, but not
        of gradients (for a loaded state dict); changes nothing."""
        self._check_settings(group, i)
        self.plan = None
        for j, p in enumerate(group["params"]):
            self._check_param(p, where(i, j))
            entry = state.get(p)
            if entry:
                _step_count(entry, where(i, j))
                self._fields_of(entry, p, where(i, j))

    def _check_param(self, p, what: str) -> None:
        """A param this stepper steps, with its options."""
        check_param(p, what, self.backend.device)
        check_options(p, what, self.cfg, self.backend)

    def _fields_of(self, entry: dict, p, what: str) -> tuple[dict, dict]:
        """(the state tensors of ``entry`` that ``p``'s layout names, each checked; the
        layout of those missing that start afresh (``_FRESH``))."""
        fields, fresh = {}, {}
        layout = state_layout(array_view(p, self.backend), self.cfg)
        for name, (dtype, shape) in layout.items():
            if name not in entry:
                if name in _FRESH:
                    fresh[name] = (dtype, shape)
                    continue
                hint = (": it was stepped with amsgrad=False" if name == "max_exp_avg_sq"
                        else ": it was not stepped with state_dtype='int8'"
                        if name in SCALE_NAMES else "")
                raise ValueError(f"{what}: its state has no {name!r}{hint}")
            check_tensor_of(entry[name], p, f"{what} state[{name!r}]", torch_dtype(dtype),
                            shape)
            fields[name] = entry[name]
        return fields, fresh

    def _check_settings(self, group, i) -> None:
        """lr (a float, or a tensor read each step) into the kernels' hyperparameters;
        the others checked again only when one changed."""
        lr = group["lr"]
        if type(lr) is not float:
            lr = float(_real(lr))
        settings = _settings(group)
        if settings != self.settings:
            cfg = config_of(group, i, lr, self.options)
            if self.cfg is None or cfg.amsgrad != self.cfg.amsgrad:
                self.plan = None  # the max_exp_avg_sq column comes or goes
            self.cfg, self.settings, self.lr = cfg, settings, lr
            self._set_config(cfg)
        elif lr != self.lr:
            try:
                lr = checked_lr(lr)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"param_groups[{i}]: {exc}") from None
            self.lr = lr
            self._set_lr(lr)

    def _run(self) -> None:
        """The step as planned: write pending state, advance the counters, step every
        dispatch, and tell autograd the params changed in place."""
        plan = self.plan
        for p, entries in plan.pending:
            plan.state[p].update(entries)
        plan.pending = []
        if not _advance(plan.steps_np, plan.members, plan.bounds, plan.t):
            self._dispatch(plan)
            plan.t[:] = plan.steps_np[plan.members[plan.bounds[:-1]]]
        for dispatch, t in zip(plan.dispatches, plan.t.tolist()):
            self._step(plan, dispatch, t)
        torch._C._increment_version(plan.stepped)

    # --- planning ------------------------------------------------------------------------
    def _replan(self, group, i, state, grads):
        """Check group ``i`` in full and make a new plan (state entries to write wait in
        ``pending``); the named error if anything is wrong."""
        params = group["params"]
        for j, p in enumerate(params):
            self._check_param(p, where(i, j))
        active = [j for j, g in enumerate(grads) if g is not None]
        for j in active:
            check_grad(grads[j], params[j], where(i, j))
        counts = np.zeros(len(params), dtype=np.float32)
        fields, new = [], {}
        for j in active:
            p = params[j]
            entry = state.get(p)
            kept, fresh = (self._fields_of(entry, p, where(i, j)) if entry else
                           ({}, state_layout(array_view(p, self.backend), self.cfg)))
            if fresh:
                new[j] = new_state(p, fresh)
            fields.append({**kept, **new.get(j, {})})
        kept = [j for j, p in enumerate(params) if state.get(p)]
        for j in kept:
            counts[j] = _step_count(state[params[j]], where(i, j))
        steps = torch.from_numpy(counts)
        pending = [(params[j], {**new.get(j, {}), "step": steps[j]})
                   for j in sorted(set(kept) | set(new))]
        chosen = None if len(active) == len(params) else active
        self.plan = plan = _Plan(params, chosen, [grads[j] for j in active], fields, steps,
                                 pending, state)
        self._dispatch(plan)
        return self._run

    def _dispatch(self, plan: _Plan) -> None:
        """Split the stepped params into dispatches of one dtype and one step count (in
        order), and make each one's resources."""
        order = list(range(len(plan.stepped)))
        index = plan.active or order
        key = lambda r: (str(plan.dtypes[r]), float(plan.steps_np[index[r]]))
        rows = [list(run) for _, run in groupby(sorted(order, key=key), key=key)]
        plan.members = np.array([index[r] for run in rows for r in run], dtype=np.int64)
        plan.bounds = np.cumsum([0] + [len(run) for run in rows], dtype=np.int64)
        plan.t = np.zeros(len(rows), dtype=np.int64)
        plan.dispatches = [self._make_dispatch(plan, np.array(run, dtype=np.int64),
                                               plan.dtypes[run[0]])
                           for run in rows]

    # --- per stepper ---------------------------------------------------------------------
    def _set_config(self, cfg: AdamConfig) -> None:
        """A new config (hyperparameters other than lr changed)."""

    def _set_lr(self, lr: float) -> None:
        """A new lr of the group (already checked)."""

    def _make_dispatch(self, plan: _Plan, rows: np.ndarray, dtype: torch.dtype):
        """What steps the stepped params ``rows`` (positions in plan.stepped)."""
        return _ArrayDispatch(self.backend, plan, rows, self.cfg)

    def _new_grads(self, plan: _Plan, grads: list, ptrs: list) -> None:
        """New gradient tensors (checked to fit) replace the planned ones."""
        plan.grads, plan.grad_ptrs = grads, ptrs
        if len(plan.dispatches) == 1:
            plan.dispatches[0].new_grads(plan, ptrs)
            return
        ptrs = np.array(ptrs, dtype=np.int64)
        for dispatch in plan.dispatches:
            dispatch.new_grads(plan, ptrs[dispatch.rows])

    def _step(self, plan: _Plan, dispatch, t: int) -> None:
        dispatch.step(self, t)


class TableStepper(GroupStepper):
    """The Numba backend's address-table kernel, fed the tensors' data pointers, for
    float32 and float64 params without state or rounding options; the others as
    GroupStepper steps them."""

    def __init__(self, backend, options: dict):
        super().__init__(backend, options)
        self.hyper = np.zeros(len(backend._kernels.HYPER_FIELDS), dtype=np.float64)

    def _set_config(self, cfg):
        self.hyper[:] = [float(getattr(cfg, name)) for name in
                         self.backend._kernels.HYPER_FIELDS]

    def _set_lr(self, lr):
        self.hyper[0] = lr

    def _make_dispatch(self, plan, rows, dtype):
        if dtype in _TABLE_DTYPES and not has_options(self.cfg):
            return _TableDispatch(self.backend, plan, rows, FLOAT_DTYPES[dtype], self.cfg)
        return super()._make_dispatch(plan, rows, dtype)


class _TableDispatch:
    """Params of one dtype and step count as one call of the address-table kernel."""

    def __init__(self, backend, plan, rows, dtype, cfg):
        from .cpu.numba import _AddressTable

        self.rows = rows
        kernels = backend._kernels
        table = self.table = _AddressTable([plan.stepped[r].numel() for r in rows], dtype,
                                           kernels)
        table.addresses[:, 0] = [plan.param_ptrs[r if plan.active is None else
                                                 plan.active[r]] for r in rows]
        table.addresses[:, 1] = [plan.grad_ptrs[r] for r in rows]
        last = "max_exp_avg_sq" if cfg.amsgrad else "exp_avg_sq"
        for column, name in ((2, "exp_avg"), (3, "exp_avg_sq"), (4, last)):
            table.addresses[:, column] = [plan.fields[r][name].data_ptr() for r in rows]
        table.choose_kernel(kernels)

    def new_grads(self, plan, ptrs) -> None:
        self.table.addresses[:, 1] = ptrs

    def step(self, stepper, t: int) -> None:
        table = self.table
        stepper.backend.launch(table.kernel, table.arguments, stepper.hyper, t,
                               table.parallel)


class _ArrayDispatch:
    """Params of one dtype and step count through ``Backend.step`` on zero-copy array
    views: of params and state made once per plan, of gradients when new ones come."""

    def __init__(self, backend, plan, rows, cfg):
        self.backend, self.rows = backend, rows
        view = lambda t: None if t is None else array_view(t, backend)
        self.params = [view(plan.stepped[r]) for r in rows]
        fields = [plan.fields[r] for r in rows]
        names = {name for f in fields for name in f}
        if cfg.state_dtype == "int8":  # a column per moment, None for float32 state
            names |= set(SCALE_NAMES[:2 + cfg.amsgrad])
        self.state = AdamState(0, **{name: [view(f.get(name)) for f in fields]
                                     for name in names})
        self.new_grads(plan, None)

    def new_grads(self, plan, ptrs) -> None:
        self.grads = [array_view(plan.grads[r], self.backend) for r in self.rows]

    def step(self, stepper, t: int) -> None:
        self.state.step = t - 1
        self.backend.step(self.params, self.grads, self.state, stepper.cfg, lr=stepper.lr)


def _pointers(tensors) -> list | None:
    """The tensors' data pointers, or None if one is None or has no single buffer."""
    try:
        return list(map(_DATA_PTR, tensors))
    except (TypeError, RuntimeError):
        return None


def _step_count(entry: dict, what: str) -> float:
    """The step count a state entry holds (a tensor, as torch keeps it, or a number)."""
    step = entry.get("step")
    try:
        count = float(step)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{what}: state['step'] must be a number or a one-element tensor, "
                         f"got {type(step).__name__}") from None
    if not (count >= 0 and count == int(count)):
        raise ValueError(f"{what}: state['step'] must be a whole number >= 0, got {count}")
    return count
