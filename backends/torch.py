"""Adam and AdamW as ``torch.optim.Optimizer`` subclasses, stepped by our backends.

Drop-in for ``torch.optim.Adam`` / ``AdamW``: the same arguments and defaults (plus
``backend``, ``table`` and the NumPy level's ``state_dtype``, ``master_weights``,
``rounding``, ``seed``: float32, float64, bfloat16 and float16 params), param groups
with their own hyperparameters, ``add_param_group``, LR schedulers (``group["lr"]`` a
float or a 0-d tensor, read every step), ``step(closure)``, params without a gradient
skipped (no state), and state dicts in torch.optim.Adam's format, so checkpoints move
both ways. CPU tensors are stepped in place with no copy: on the Numba backend every
float32 or float64 tensor of a group (of one dtype) in one kernel call fed the tensors'
data pointers; low-precision params and state, and any other backend, through array
views (``backends._torch_groups``), bit for bit as ``backends.Adam``. Extra state
(master copies, Kahan compensation, int8 scales, the stochastic-rounding seed) sits in
per-param keys of the state dict (docs/torch.md).

What differs from torch: ``capturable`` and ``differentiable`` are refused; ``foreach``
and ``fused`` are accepted and kept in the groups (the state dict format) but choose
nothing; eps must be > 0 (as in AdamConfig). State tensors belong to the optimizer: change
them through ``load_state_dict``, not by rebinding entries of ``optimizer.state``.
"""
from __future__ import annotations

import warnings

import torch
from torch.optim import optimizer as _optim

from .auto import choose_backend
from .base import Backend
from .config import AdamConfig
from .registry import get_backend
from ._torch_groups import GroupStepper, TableStepper, config_of
from ._torch_tensors import (array_view, check_options, check_param, state_layout,
                             torch_dtype, where)

__all__ = ["Adam", "AdamW"]

#: Group keys of torch.optim.Adam that have no effect here, with the values we step.
_INERT = {"capturable": False, "differentiable": False}


class Adam(torch.optim.Optimizer):
    """``torch.optim.Adam`` stepped by one of our backends.

    ``backend`` is a registered name, a Backend instance, or "auto" (the fastest measured
    for these tensors, see backends.auto; ``choice`` says why); ``table`` is auto's
    measured table. ``state_dtype``, ``master_weights``, ``rounding`` and ``seed`` are
    AdamConfig's, for every group (docs/low-precision.md, docs/int8.md): bfloat16 and
    float16 params step as the NumPy-level ``backends.Adam`` steps them.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False,
                 backend: str | Backend = "auto", state_dtype=None, master_weights=False,
                 rounding="nearest", seed=0, table=None):
        for name, value in (("capturable", capturable), ("differentiable", differentiable)):
            if value:
                raise ValueError(f"{name}=True is not supported by backends.torch.Adam")
        options = {"state_dtype": state_dtype, "master_weights": master_weights,
                   "rounding": rounding, "seed": seed}
        AdamConfig(**options)  # a bad option raises naming itself, before anything else
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                    "capturable": capturable, "differentiable": differentiable,
                    "fused": fused, "decoupled_weight_decay": decoupled_weight_decay}
        self._steppers: dict = {}
        self.options = options
        super().__init__(params, defaults)
        self.backend, self.choice = _pick_backend(backend, self._all_params(), table)
        for i, group in enumerate(self.param_groups):
            cfg = config_of(group, i, options=options)
            for j, p in enumerate(group["params"]):
                check_options(p, where(i, j), cfg, self.backend)

    def add_param_group(self, param_group: dict) -> None:
        """torch's add_param_group, after our checks of the group's hyperparameters and
        params (nothing is added if one fails)."""
        if isinstance(param_group, dict):
            i = len(self.param_groups)
            merged = {**self.defaults, **param_group}
            cfg = config_of(merged, i, options=self.options)
            for key, value in _INERT.items():
                if merged.get(key, value) != value:
                    raise ValueError(f"param_groups[{i}]: {key}=True is not supported")
            params = param_group.get("params", ())
            if isinstance(params, torch.Tensor):
                params = [params]
            elif not isinstance(params, set):  # torch refuses sets; a generator is read once
                params = param_group["params"] = list(params)
            backend = getattr(self, "backend", None)  # None while __init__ adds groups
            for j, p in enumerate(params):
                check_param(p, where(i, j), getattr(backend, "device", None))
                if backend is not None:
                    check_options(p, where(i, j), cfg, backend)
        super().add_param_group(param_group)

    def step(self, closure=None):
        """One Adam step of every param with a gradient; returns ``closure()``'s loss
        (evaluated with gradients enabled) when a closure is given. Every group is
        checked before any is stepped.

        Step hooks and the profiler's ``Optimizer.step#...`` record run through torch's
        own wrapper, applied only when a hook is registered or the profiler is on: its
        record_function costs about 10 us a step otherwise (torch.optim wraps every
        step; ``hooked`` tells it this one needs no wrapping)."""
        if (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                or _optim._global_optimizer_pre_hooks or _optim._global_optimizer_post_hooks
                or torch.autograd._profiler_enabled()):
            return self._hooked_step() if closure is None else self._hooked_step(closure)
        return self._step(closure)

    step.hooked = True

    def _step(self, closure=None):
        """The step itself (see step)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        runs = [self._stepper(group).prepare(group, i, self.state)
                for i, group in enumerate(self.param_groups)]
        for run in runs:
            run()
        return loss

    _hooked_step = torch.optim.Optimizer.profile_hook_step(_step)

    def state_dict(self) -> dict:
        """torch's state_dict; with stochastic rounding each param's entry also holds the
        stream's seed (``rounding_seed``), so a loaded checkpoint continues the stream."""
        saved = super().state_dict()
        if self.options["rounding"] == "stochastic":
            saved["state"] = {k: {**entry, "rounding_seed": self.options["seed"]}
                              for k, entry in saved["state"].items()}
        return saved

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load_state_dict (a torch.optim.Adam checkpoint loads as it is), with
        each state tensor in the dtype this optimizer's state has (torch would cast all
        to the param's: master copies, int8 codes); a saved ``rounding_seed`` becomes
        the seed. The loaded state is checked against the params, and a bad one leaves
        the optimizer as it was."""
        before = self.__getstate__()
        super().load_state_dict(state_dict)
        try:
            self._restore_dtypes(state_dict)
            self._check_loaded()
        except (TypeError, ValueError):
            self.__setstate__(before)
            raise

    def _restore_dtypes(self, state_dict: dict) -> None:
        """The loaded state tensors copied from ``state_dict`` in their state's dtypes
        (floating ones cast to the layout's, others kept), and the saved seed adopted."""
        saved = state_dict["state"]
        ids = [k for group in state_dict["param_groups"] for k in group["params"]]
        pairs = [(i, group, p) for i, group in enumerate(self.param_groups)
                 for p in group["params"]]
        seeds = set()
        for key, (i, group, p) in zip(ids, pairs):
            if key not in saved:
                continue
            layout = state_layout(array_view(p, self.backend),
                                  config_of(group, i, options=self.options))
            for name, value in saved[key].items():
                if name == "rounding_seed":  # kept in state_dict() only
                    seeds.add(self.state[p].pop(name))
                elif isinstance(value, torch.Tensor) and name != "step":
                    self.state[p][name] = _as_layout(value, layout.get(name), p.device)
        if len(seeds) > 1:
            raise ValueError(f"the state dict's params hold different rounding_seed values "
                             f"{sorted(seeds)}; one seed serves every param")
        if seeds:
            self.options = {**self.options, "seed": AdamConfig(seed=seeds.pop()).seed}

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "backend": self.backend,
                "choice": self.choice, "options": self.options}

    def __setstate__(self, state: dict) -> None:
        """Also for loaded state dicts: torch.optim.Adam's defaults for missing keys
        (older checkpoints), and the plans made afresh."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in (("amsgrad", False), ("maximize", False), ("foreach", None),
                               ("capturable", False), ("differentiable", False),
                               ("decoupled_weight_decay", False), ("fused", None)):
                group.setdefault(key, value)
        self._steppers = {}

    def _check_loaded(self) -> None:
        """Each group's hyperparameters and every param's state, as a step would check
        them (the plans are made, nothing is stepped)."""
        for i, group in enumerate(self.param_groups):
            self._stepper(group).check_state(group, i, self.state)

    def _stepper(self, group: dict):
        """The group's stepper (made at its first step, kept while the group is)."""
        held = self._steppers.get(id(group))
        if held is None or held[0] is not group:
            kind = TableStepper if _is_numba(self.backend) else GroupStepper
            held = self._steppers[id(group)] = (group, kind(self.backend, self.options))
        return held[1]

    def _all_params(self) -> list:
        return [p for group in self.param_groups for p in group["params"]]


class AdamW(Adam):
    """``torch.optim.AdamW`` (decoupled weight decay, default 1e-2) stepped by one of our
    backends; see Adam."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None, backend: str | Backend = "auto",
                 state_dtype=None, master_weights=False, rounding="nearest", seed=0,
                 table=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, backend=backend,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed, table=table)

    def __setstate__(self, state: dict) -> None:
        """As torch.optim.AdamW: a loaded group is decoupled whatever it says."""
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def _as_layout(value, wanted, device):
    """A copy of a saved state tensor on ``device``: a floating one in the floating dtype
    of its layout entry ``wanted`` ((NumPy dtype, shape) or None), any other as saved."""
    dtype = value.dtype
    if wanted is not None and value.is_floating_point():
        target = torch_dtype(wanted[0])
        dtype = target if target.is_floating_point else dtype
    return value.to(device=device, dtype=dtype, copy=True)


def _is_numba(backend: Backend) -> bool:
    from .cpu.numba import NumbaBackend

    return isinstance(backend, NumbaBackend)


def _pick_backend(backend, params, table):
    """(Backend, auto's Choice or None) for these params."""
    if isinstance(backend, Backend):
        chosen, choice = backend, None
    elif backend == "auto":
        device = "cpu" if all(p.device.type == "cpu" for p in params) else "cuda"
        dtype = str(params[0].dtype).removeprefix("torch.") if params else "float32"
        choice = choose_backend([p.numel() for p in params], dtype=dtype, device=device,
                                table=table)
        if choice.fallback:
            from .optimizer import AutoFallbackWarning

            warnings.warn(f'Adam(backend="auto") chose {choice.reason}', AutoFallbackWarning,
                          stacklevel=4)
        chosen = get_backend(choice.name)
    else:
        chosen, choice = get_backend(backend), None
    for j, p in enumerate(params):
        if p.device.type != chosen.device:
            raise ValueError(f"param {j} is on {p.device} but the {chosen.name} backend "
                             f"steps {chosen.device} tensors")
    return chosen, choice
