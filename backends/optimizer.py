"""Adam: the user-facing optimizer over one backend, with state dicts and .npz files."""
from __future__ import annotations

import os
import warnings

import numpy as np

from .auto import Choice, choose_backend
from .base import Backend
from .checkpoint import read_checkpoint, write_checkpoint
from .config import AdamConfig
from .registry import get_backend
from .state import AdamState
from .validation import as_list

__all__ = ["Adam", "AutoFallbackWarning"]


class Adam:
    """``Adam(params, backend="auto", table=None, **config)``; ``step(grads)`` updates
    params in place.

    ``backend`` is a name, a Backend instance, or "auto": the fastest measured backend for
    these tensors, from ``table`` or the places ``backends.auto`` documents; ``choice``
    then says what was picked and why (a built-in fallback also warns, AutoFallbackWarning).
    ``config`` takes AdamConfig's fields.
    """

    def __init__(self, params, backend: str | Backend = "auto", table=None, **config):
        self.config = AdamConfig(**config)
        self.params = list(as_list(params, "params"))
        self.choice: Choice | None = None
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            if backend == "auto":
                self.choice = _choose(self.params, table)
                backend = self.choice.name
            self.backend = get_backend(backend)
        self.state: AdamState = self.backend.init_state(self.params, self.config)

    def step(self, grads) -> None:
        """One Adam step with these gradients (same order and shapes as params)."""
        self.backend.step(self.params, grads, self.state, self.config)

    def state_dict(self) -> dict:
        """Config, backend name and host copies of the state (see AdamState.to_dict)."""
        return {"config": self.config.to_dict(), "backend": self.backend.name,
                "state": self.state.to_dict()}

    def load_state_dict(self, d: dict) -> None:
        """Restore config and state; checked against params before anything changes."""
        if not isinstance(d, dict) or not {"config", "state"} <= set(d):
            keys = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"a state dict needs 'config' and 'state' (Adam.state_dict() "
                             f"output), got {keys}")
        config = AdamConfig(**d["config"])
        state = self.backend.state_from_dict(d["state"])
        self.backend.check_state(self.params, state, config)
        self.config, self.state = config, state

    def save(self, path: str | os.PathLike) -> None:
        """Write state_dict to an .npz file, atomically: a crash or a failed save leaves
        the old file, and concurrent saves to one path each write a whole file."""
        write_checkpoint(path, self.state_dict())

    @classmethod
    def load(cls, path, params, backend: str | Backend | None = None) -> "Adam":
        """An Adam over ``params`` resumed from a file written by ``save``.

        ``backend`` defaults to the one that saved it; any other can take over. A file
        that is not one, or holds state for other tensors, raises ValueError naming it.
        """
        params = list(as_list(params, "params"))
        saved = read_checkpoint(path, params)
        opt = cls(params, backend=backend or saved["backend"], **saved["config"])
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
