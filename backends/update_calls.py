"""How a checked step reaches a backend's kernels: ``_update`` once per dtype of the
full-precision tensors, ``_update_int8`` per int8 tensor, each at the step's learning
rate. A plugin's ``_update`` written without the ``lr`` parameter gets a config holding
the step's lr instead (one per learning rate, kept while it repeats).
"""
from __future__ import annotations

import dataclasses
import inspect

__all__ = ["takes_lr", "apply_full_precision", "call_update", "call_update_int8"]


def takes_lr(method) -> bool:
    """Whether ``method`` accepts an ``lr`` keyword."""
    parameters = inspect.signature(method).parameters.values()
    return any(p.name == "lr" or p.kind is p.VAR_KEYWORD for p in parameters)


def apply_full_precision(backend, params, grads, groups, step, state, cfg, lr) -> None:
    """Step ``step + 1`` of checked full-precision tensors (``groups``: {dtype: indices});
    ``state.step`` goes up by one."""
    t = step + 1
    amax = state.max_exp_avg_sq if cfg.amsgrad else None
    if len(groups) == 1:
        for dtype in groups:
            call_update(backend, params, grads, state.exp_avg, state.exp_avg_sq, amax, cfg,
                        t, dtype, state.cache, lr)
    else:
        columns = (params, grads, state.exp_avg, state.exp_avg_sq, amax)
        for dtype, idx in groups.items():
            pick = [None if c is None else [c[i] for i in idx] for c in columns]
            call_update(backend, *pick, cfg, t, dtype, state.cache, lr)
    state.step = t


def call_update(backend, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t,
                dtype, cache, lr) -> None:
    """``backend._update`` at learning rate ``lr`` (None: cfg.lr)."""
    if lr is None:
        backend._update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                        cache)
    elif backend._update_takes_lr:
        backend._update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                        cache, lr=lr)
    else:
        backend._update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq,
                        _config_with_lr(cfg, lr, cache), t, dtype, cache)


def call_update_int8(backend, p, g, moments, cfg, t, cache, lr) -> None:
    """``backend._update_int8`` at learning rate ``lr`` (None: cfg.lr)."""
    if lr is None:
        backend._update_int8(p, g, moments, cfg, t)
    elif backend._update_int8_takes_lr:
        backend._update_int8(p, g, moments, cfg, t, lr=lr)
    else:
        backend._update_int8(p, g, moments, _config_with_lr(cfg, lr, cache), t)


def _config_with_lr(cfg, lr: float, cache: dict):
    """``cfg`` with this ``lr``, for an update that reads lr from its config; the last one
    is kept in ``cache``, so a repeated lr makes no new config."""
    last = cache.get("config_with_lr")
    if last is None or last[0] is not cfg or last[1] != lr:
        last = cache["config_with_lr"] = (cfg, lr, dataclasses.replace(cfg, lr=lr))
    return last[2]
