"""Adam: the user-facing optimizer over one backend, with param groups, state dicts and
.npz files."""
from __future__ import annotations

import os
import warnings

import numpy as np

from .auto import Choice, choose_backend
from .base import Backend
from .checkpoint import read_checkpoint, write_checkpoint
from .config import AdamConfig
from .param_groups import (GroupConfig, OneGroupAttributes, check_distinct, check_group,
                           describe_groups, group_config, make_groups, step_rates)
from .registry import get_backend
from .state import AdamState
from .validation import as_list

__all__ = ["Adam", "AutoFallbackWarning"]


class Adam(OneGroupAttributes):
    """``Adam(params, backend="auto", table=None, **config)``; ``step(grads)`` updates
    params in place.

    ``params`` is a list of arrays, or of param group dicts as torch.optim takes them
    (``[{"params": [w], "weight_decay": 0.1}, {"params": [b]}]``, see
    ``backends.param_groups``): each group has its own hyperparameters and state and is
    stepped in one backend dispatch; ``config`` (AdamConfig's fields) gives the values a
    group leaves out. ``params`` (the attribute) lists every tensor, group by group; a
    step's grads come in that order. A schedule sets ``param_groups[i]["lr"]`` between
    steps (or passes ``step(grads, lr=...)``): no config is rebuilt and no array checked
    again for it.

    ``backend`` is a name, a Backend instance, or "auto": the fastest measured backend for
    these tensors, from ``table`` or the places ``backends.auto`` documents; ``choice``
    then says what was picked and why (a built-in fallback also warns, AutoFallbackWarning).
    """

    def __init__(self, params, backend: str | Backend = "auto", table=None, **config):
        self.defaults = AdamConfig(**config)
        groups = make_groups(params, self.defaults)
        self.choice: Choice | None = None
        everything = [p for g in groups for p in g["params"]]
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            if backend == "auto":
                self.choice = _choose(everything, table)
                backend = self.choice.name
            self.backend = get_backend(backend)
        self.param_groups: list[dict] = []
        self.params: list = []
        self.states: list[AdamState] = []
        self._configs: list[GroupConfig] = []
        self._group_params: list[list] = []
        for group in groups:
            self._add(group)

    def add_param_group(self, group: dict) -> None:
        """Add a group (a dict as in ``param_groups``) with fresh state, as torch.optim's
        ``add_param_group``; its tensors' grads follow the others' in ``step``."""
        self._add(check_group(group, len(self.param_groups), self.defaults))

    def _add(self, group: dict) -> None:
        i = len(self.param_groups)
        check_distinct(group["params"], i, {id(p) for p in self.params})
        configs = GroupConfig()
        state = self.backend.init_state(group["params"], configs.of(group, i))
        self.param_groups.append(group)
        self._configs.append(configs)
        self._group_params.append((group["params"], len(group["params"])))
        self.states.append(state)
        self.params.extend(group["params"])

    def step(self, grads, lr=None) -> None:
        """One Adam step with these gradients (same order and shapes as ``params``).

        ``lr`` (a number, or one per group) is this step's learning rate and becomes the
        groups' ``"lr"``, as a schedule would set it; everything is checked before any
        group (or its dict) changes."""
        rates = None if lr is None else step_rates(lr, len(self.param_groups))
        calls = self._calls(as_list(grads, "grads"), rates)
        if len(calls) == 1:
            self.backend.step(*calls[0])
        else:
            self.backend.step_groups(calls)
        for group, rate in zip(self.param_groups, rates or ()):
            group["lr"] = rate

    def _calls(self, grads, rates) -> list[tuple]:
        """(params, grads, state, config, lr) of every group, checked."""
        if len(grads) != len(self.params):
            raise ValueError(f"params and grads differ in length: {len(self.params)} vs "
                             f"{len(grads)}")
        calls, start, one = [], 0, len(self.param_groups) == 1
        for i, group in enumerate(self.param_groups):
            params, n = self._group_params[i]
            if group["params"] is not params or len(params) != n:
                raise ValueError(f"param_groups[{i}]['params'] was changed; tensors join "
                                 "through add_param_group")
            calls.append((params, grads if one else grads[start:start + n], self.states[i],
                          self._configs[i].of(group, i),
                          group["lr"] if rates is None else rates[i]))
            start += n
        return calls

    # --- state dicts and files -----------------------------------------------------------
    def state_dict(self) -> dict:
        """Backend name, the groups (``param_groups``: hyperparameters, current lr and the
        indices of their tensors in ``params``) and host copies of each group's state
        (see AdamState.to_dict). One group keeps the format from before groups: its
        ``config`` and ``state``; several have the defaults and a list of states."""
        config, groups = describe_groups(self.param_groups, self.defaults)
        states = [s.to_dict() for s in self.states]
        return {"config": config, "backend": self.backend.name, "param_groups": groups,
                "state": states[0] if len(states) == 1 else states}

    def load_state_dict(self, d: dict) -> None:
        """Restore hyperparameters and state; checked against params (the same groups of
        the same tensors) before anything changes. A state dict from before groups (no
        ``param_groups``) is one group's."""
        if not isinstance(d, dict) or not {"config", "state"} <= set(d):
            keys = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"a state dict needs 'config' and 'state' (Adam.state_dict() "
                             f"output), got {keys}")
        saved = d.get("param_groups")
        if saved is None:
            saved = [{**AdamConfig(**d["config"]).to_dict(),
                      "params": list(range(len(self.params)))}]
        states = d["state"] if isinstance(d["state"], list) else [d["state"]]
        self._check_layout(saved, states)
        groups, restored = [], []
        for i, (entry, host) in enumerate(zip(saved, states)):
            values = {k: v for k, v in entry.items() if k not in ("params", "step")}
            config = group_config({**self.param_groups[i], **values}, i)
            state = self.backend.state_from_dict(host)
            self.backend.check_state(self._group_params[i][0], state, config)
            groups.append(config.to_dict())
            restored.append(state)
        for group, values in zip(self.param_groups, groups):
            group.update(values)
        self.states = restored

    def _check_layout(self, saved, states) -> None:
        if not isinstance(saved, list) or len(saved) != len(self.param_groups) \
                or len(states) != len(saved):
            n = len(saved) if isinstance(saved, list) else type(saved).__name__
            raise ValueError(f"the state dict holds {n} param groups but this Adam has "
                             f"{len(self.param_groups)}")
        start = 0
        for i, (entry, group) in enumerate(zip(saved, self.param_groups)):
            n = len(group["params"])
            if not isinstance(entry, dict) or list(entry.get("params", ())) != list(
                    range(start, start + n)):
                raise ValueError(f"param_groups[{i}] of the state dict holds other tensors "
                                 f"than this Adam's param_groups[{i}] (params "
                                 f"{start}..{start + n - 1})")
            start += n

    def save(self, path: str | os.PathLike) -> None:
        """Write state_dict to an .npz file, atomically: a crash or a failed save leaves
        the old file, and concurrent saves to one path each write a whole file."""
        write_checkpoint(path, self.state_dict())

    @classmethod
    def load(cls, path, params, backend: str | Backend | None = None) -> "Adam":
        """An Adam over ``params`` resumed from a file written by ``save``, with the saved
        groups (``params`` is the list of every tensor, in ``Adam.params`` order).

        ``backend`` defaults to the one that saved it; any other can take over. A file
        that is not one, or holds state for other tensors, raises ValueError naming it.
        """
        params = list(as_list(params, "params"))
        saved = read_checkpoint(path, params)
        groups = [{**{k: v for k, v in g.items() if k not in ("params", "step")},
                   "params": [params[k] for k in g["params"]]} for g in saved["param_groups"]]
        opt = cls(groups, backend=backend or saved["backend"], **saved["config"])
        try:
            opt.load_state_dict(saved)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        return opt


class AutoFallbackWarning(UserWarning):
    """``backend="auto"`` found no measured table (or no rows for these tensors)."""


def _choose(params, table) -> Choice:
    choice = choose_backend([p.size for p in params],
                            dtype=str(params[0].dtype) if params else "float32",
                            device=_device_of(params), table=table)
    if choice.fallback:
        warnings.warn(f'Adam(backend="auto") chose {choice.reason}', AutoFallbackWarning,
                      stacklevel=3)
    return choice


def _device_of(params) -> str:
    return "cpu" if all(isinstance(p, np.ndarray) for p in params) else "cuda"
