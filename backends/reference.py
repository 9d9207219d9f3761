"""The float64 reference: Adam spelled out step by step, the oracle for tests and harness.

Kingma & Ba, Algorithm 1, with torch.optim.Adam's options. For step t (counting from 1)
and gradient g of parameters p::

    0. g = -g if maximize;  g = g + weight_decay * p if L2;  p = p * (1 - lr * weight_decay) if AdamW
    1. m = beta1 * m + (1 - beta1) * g                 first moment (momentum)
    2. v = beta2 * v + (1 - beta2) * g * g             second moment (uncentred variance)
    3. m_hat = m / (1 - beta1**t)                      bias corrections: m and v start at 0
       v_hat = v / (1 - beta2**t)                      (amsgrad: v_max = max(v_max, v) is corrected)
    4. p = p - lr * m_hat / (sqrt(v_hat) + eps)        eps outside the square root, as in the paper

Everything is computed in float64 on new arrays; nothing passed in is modified.
NaN or Inf in g propagate as IEEE arithmetic says: they are not errors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import AdamConfig

__all__ = ["ReferenceState", "reference_step", "reference_run"]


@dataclass
class ReferenceState:
    """Float64 moments of one tensor; ``v_max`` is None unless amsgrad."""

    m: np.ndarray
    v: np.ndarray
    v_max: np.ndarray | None

    @classmethod
    def zeros_like(cls, p: np.ndarray, amsgrad: bool) -> "ReferenceState":
        zeros = np.zeros(np.shape(p), dtype=np.float64)
        return cls(zeros.copy(), zeros.copy(), zeros.copy() if amsgrad else None)


def reference_step(p, g, state: ReferenceState, t: int, cfg: AdamConfig):
    """One Adam step of one tensor at step ``t``; returns (new float64 p, new ReferenceState)."""
    with np.errstate(all="ignore"):  # overflow, NaN and Inf follow IEEE, silently
        return _step(np.asarray(p, dtype=np.float64), np.asarray(g, dtype=np.float64), state,
                     t, cfg)


def _step(p, g, state, t, cfg):
    if cfg.maximize:
        g = -g
    if cfg.weight_decay != 0 and not cfg.decoupled:
        g = g + cfg.weight_decay * p
    if cfg.decoupled:
        p = p * (1.0 - cfg.lr * cfg.weight_decay)

    m = cfg.beta1 * state.m + (1.0 - cfg.beta1) * g
    v = cfg.beta2 * state.v + (1.0 - cfg.beta2) * g * g
    v_max = np.maximum(state.v_max, v) if cfg.amsgrad else None

    m_hat = m / (1.0 - cfg.beta1**t)
    v_hat = (v_max if cfg.amsgrad else v) / (1.0 - cfg.beta2**t)

    p = p - cfg.lr * m_hat / (np.sqrt(v_hat) + cfg.eps)
    return p, ReferenceState(m, v, v_max)


def reference_run(params, grad_steps, cfg: AdamConfig, states=None, first_step: int = 1):
    """Step every tensor through ``grad_steps`` (a list, per step, of per-tensor gradients).

    Returns (float64 params, list of ReferenceState). ``states`` resumes from given moments.
    """
    params = [np.asarray(p, dtype=np.float64) for p in params]
    if states is None:
        states = [ReferenceState.zeros_like(p, cfg.amsgrad) for p in params]
    for offset, grads in enumerate(grad_steps):
        t = first_step + offset
        for i, g in enumerate(grads):
            params[i], states[i] = reference_step(params[i], g, states[i], t, cfg)
    return params, states
