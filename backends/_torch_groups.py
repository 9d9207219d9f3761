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

Two steppers: ``TableStepper`` hands every dispatch's addresses straight to the Numba
address-table kernel (no array objects per step); ``ArrayStepper`` runs any backend's
``step`` on zero-copy array views (NumPy for CPU tensors, CuPy or Numba for CUDA ones).
"""
from __future__ import annotations

import operator
from itertools import groupby

import numpy as np
import torch
from numba import njit

from .config import AdamConfig, checked_lr
from .state import AdamState
from ._torch_tensors import (FLOAT_DTYPES, array_view, check_grad, check_moment,
                             check_param, where)

__all__ = ["GroupStepper", "TableStepper", "ArrayStepper", "config_of"]

_GRAD = operator.attrgetter("grad")
_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")
_DEVICE_INDEX = torch.Tensor.get_device  # an int: half the cost of a torch.device
_DATA_PTR = torch.Tensor.data_ptr
_IS_CONTIGUOUS = torch.Tensor.is_contiguous
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def config_of(group: dict, i: int, lr: float | None = None) -> AdamConfig:
    """The AdamConfig of param group ``i`` (its ``lr`` unless one is given); a bad value
    raises naming the group."""
    try:
        beta1, beta2 = group["betas"]
        return AdamConfig(lr=_real(group["lr"]) if lr is None else lr, beta1=_real(beta1),
                          beta2=_real(beta2), eps=_real(group["eps"]),
                          weight_decay=_real(group["weight_decay"]),
                          decoupled=bool(group["decoupled_weight_decay"]),
                          amsgrad=bool(group["amsgrad"]), maximize=bool(group["maximize"]))
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

    def __init__(self, params, active, grads, moments, steps, pending, state):
        self.params = list(params)
        self.param_ptrs = list(map(_DATA_PTR, params))
        self.active = active                      # indices with a gradient; None: all
        self.grads = grads
        self.grad_ptrs = list(map(_DATA_PTR, grads))
        stepped = params if active is None else [params[j] for j in active]
        self.stepped = stepped
        self.shapes = list(map(_SHAPE, stepped))
        self.dtypes = list(map(_DTYPE, stepped))
        self.devices = list(map(_DEVICE_INDEX, stepped))
        self.moments = moments                    # per stepped param: (m, v, vmax or None)
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
                and list(map(_DTYPE, grads)) == self.dtypes
                and all(map(_IS_CONTIGUOUS, grads))
                and list(map(_DEVICE_INDEX, grads)) == self.devices)


class GroupStepper:
    """Steps one param group; subclasses make and run the dispatches."""

    def __init__(self, backend, state_dtype=None):
        self.backend = backend
        self.state_dtype = state_dtype
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
            check_param(p, where(i, j), self.backend.device)
            entry = state.get(p)
            if entry:
                _step_count(entry, where(i, j))
                _moments_of(entry, p, where(i, j), self.cfg.amsgrad)

    def _check_settings(self, group, i) -> None:
        """lr (a float, or a tensor read each step) into the kernels' hyperparameters;
        the others checked again only when one changed."""
        lr = group["lr"]
        if type(lr) is not float:
            lr = float(_real(lr))
        settings = _settings(group)
        if settings != self.settings:
            cfg = config_of(group, i, lr)
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
            check_param(p, where(i, j), self.backend.device)
        active = [j for j, g in enumerate(grads) if g is not None]
        for j in active:
            check_grad(grads[j], params[j], where(i, j))
        amsgrad = self.cfg.amsgrad
        counts = np.zeros(len(params), dtype=np.float32)
        moments, new = [], {}
        for j in active:
            entry = state.get(params[j])
            if entry:
                moments.append(_moments_of(entry, params[j], where(i, j), amsgrad))
            else:
                new[j] = tuple(torch.zeros_like(params[j]) for _ in range(2 + amsgrad))
                moments.append(new[j] + (None,) * (1 - amsgrad))
        kept = [j for j, p in enumerate(params) if state.get(p)]
        for j in kept:
            counts[j] = _step_count(state[params[j]], where(i, j))
        steps = torch.from_numpy(counts)
        pending = [(params[j], {**dict(zip(_MOMENTS, new.get(j, ()))), "step": steps[j]})
                   for j in sorted(set(kept) | set(new))]
        chosen = None if len(active) == len(params) else active
        self.plan = plan = _Plan(params, chosen, [grads[j] for j in active], moments, steps,
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
                                               FLOAT_DTYPES[plan.dtypes[run[0]]])
                           for run in rows]

    # --- per stepper ---------------------------------------------------------------------
    def _set_config(self, cfg: AdamConfig) -> None:
        raise NotImplementedError

    def _set_lr(self, lr: float) -> None:
        raise NotImplementedError

    def _make_dispatch(self, plan: _Plan, rows: np.ndarray, dtype: np.dtype):
        """What steps the stepped params ``rows`` (positions in plan.stepped)."""
        raise NotImplementedError

    def _new_grads(self, plan: _Plan, grads: list, ptrs: list) -> None:
        """New gradient tensors (checked to fit) replace the planned ones."""
        plan.grads, plan.grad_ptrs = grads, ptrs

    def _step(self, plan: _Plan, dispatch, t: int) -> None:
        raise NotImplementedError


class TableStepper(GroupStepper):
    """The Numba backend's address-table kernel, fed the tensors' data pointers."""

    def __init__(self, backend, state_dtype=None):
        super().__init__(backend, state_dtype)
        from .cpu.numba import _AddressTable

        self._table_type = _AddressTable
        self._kernels = backend._kernels
        self.hyper = np.zeros(len(self._kernels.HYPER_FIELDS), dtype=np.float64)

    def _set_config(self, cfg):
        self.hyper[:] = [float(getattr(cfg, name)) for name in self._kernels.HYPER_FIELDS]

    def _set_lr(self, lr):
        self.hyper[0] = lr

    def _make_dispatch(self, plan, rows, dtype):
        table = self._table_type([plan.stepped[r].numel() for r in rows], dtype,
                                 self._kernels)
        table.addresses[:, 0] = [plan.param_ptrs[r if plan.active is None else
                                                 plan.active[r]] for r in rows]
        table.addresses[:, 1] = [plan.grad_ptrs[r] for r in rows]
        for column, moment in ((2, 0), (3, 1), (4, 2 if self.cfg.amsgrad else 1)):
            table.addresses[:, column] = [plan.moments[r][moment].data_ptr() for r in rows]
        table.choose_kernel(self._kernels)
        return rows, table

    def _new_grads(self, plan, grads, ptrs):
        super()._new_grads(plan, grads, ptrs)
        if len(plan.dispatches) == 1:
            plan.dispatches[0][1].addresses[:, 1] = ptrs
            return
        ptrs = np.array(ptrs, dtype=np.int64)
        for rows, table in plan.dispatches:
            table.addresses[:, 1] = ptrs[rows]

    def _step(self, plan, dispatch, t):
        table = dispatch[1]
        self.backend.launch(table.kernel, table.arguments, self.hyper, t, table.parallel)


class ArrayStepper(GroupStepper):
    """Any backend's ``step`` over zero-copy array views of the tensors."""

    def _set_config(self, cfg):
        pass

    def _set_lr(self, lr):
        pass

    def _make_dispatch(self, plan, rows, dtype):
        view = lambda t: array_view(t, self.backend)
        moments = [[view(plan.moments[r][k]) for r in rows] for k in range(3)
                   if k < 2 or self.cfg.amsgrad]
        state = AdamState(0, moments[0], moments[1], moments[2] if len(moments) == 3
                          else None)
        return rows, [view(plan.stepped[r]) for r in rows], state

    def _step(self, plan, dispatch, t):
        rows, params, state = dispatch
        grads = [array_view(plan.grads[r], self.backend) for r in rows]
        state.step = t - 1
        self.backend.step(params, grads, state, self.cfg, lr=self.lr)


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


def _moments_of(entry: dict, p, what: str, amsgrad: bool) -> tuple:
    """(exp_avg, exp_avg_sq, max_exp_avg_sq or None) of a state entry, each checked."""
    names = _MOMENTS if amsgrad else _MOMENTS[:2]
    for name in names:
        if name not in entry:
            hint = (": it was stepped with amsgrad=False" if name == "max_exp_avg_sq"
                    else "")
            raise ValueError(f"{what}: its state has no {name!r}{hint}")
        check_moment(entry[name], p, f"{what} state[{name!r}]")
    return tuple(entry[name] for name in names) + ((None,) if not amsgrad else ())
