"""How far a backend may be from the float64 reference: every tolerance, with its reason.

u is the unit roundoff of the dtype (2**-24 for float32, 2**-53 for float64) and K the
number of steps. A correct kernel differs from the reference only by rounding:

- parameters: each step rounds p (at most u*|p|) and computes the update lr*m_hat/(sqrt(v_hat)+eps)
  with a relative error of a few u, amplified by the moments' own error (below); the update
  is at most lr * spike, spike = max(1, (1-beta1)/sqrt(1-beta2)) (a lone gradient spike).
  Summed over K steps:
      |p - p_ref| <= SAFETY * K * u * (|p_ref| + lr * (10 + 1/(1-beta1) + 0.5/(1-beta2)) * spike)
- first moment: each step rounds terms as large as the gradient, and those errors decay by
  beta1 each step, so they add up to u/(1-beta1) times the largest |g| seen (m itself can
  be near 0 by cancellation, so its own size is no scale):
      |m - m_ref| <= SAFETY * u * (10 + 1/(1-beta1)) * (max|g_eff| + tiny)
- second moment (and its running max): a sum of positive terms, so its own rounding is
  relative to itself (with beta2), plus the error of squaring a g_eff = g + weight_decay*p
  that cancelled: 2*(1-beta2)*|g_eff|*u*max|g_eff| a step, decaying by beta2, so 2*u*max|g_eff|^2:
      |v - v_ref| <= SAFETY * u * ((10 + 1/(1-beta2)) * |v_ref| + 2 * max|g_eff|^2 + tiny)

SAFETY = 4 leaves room for the bounds' constants; a bug (a wrong bias correction, a
swapped beta) moves results by a fraction of lr, orders of magnitude beyond these.
"""
from __future__ import annotations

import numpy as np

from backends import AdamConfig

__all__ = ["SAFETY", "unit_roundoff", "param_tolerance", "first_moment_tolerance",
           "second_moment_tolerance"]

SAFETY = 4.0


def unit_roundoff(dtype) -> float:
    """Half the distance from 1 to the next float: 2**-24 (float32), 2**-53 (float64)."""
    return float(np.finfo(dtype).eps) / 2


def _spike(cfg: AdamConfig) -> float:
    """About the largest |m_hat / sqrt(v_hat)| a gradient sequence produces (a lone spike)."""
    return max(1.0, (1.0 - cfg.beta1) / np.sqrt(1.0 - cfg.beta2))


def param_tolerance(expected: np.ndarray, dtype, steps: int, cfg: AdamConfig) -> np.ndarray:
    """Allowed |p - p_ref| per element after ``steps`` steps."""
    u = unit_roundoff(dtype)
    amplification = 10 + 1 / (1 - cfg.beta1) + 0.5 / (1 - cfg.beta2)
    scale = np.abs(expected) + cfg.lr * amplification * _spike(cfg)
    return SAFETY * max(steps, 1) * u * scale


def first_moment_tolerance(g_max: np.ndarray, dtype, cfg: AdamConfig) -> np.ndarray:
    """Allowed |m - m_ref| per element; ``g_max`` is the largest |g_eff| seen so far."""
    u = unit_roundoff(dtype)
    return SAFETY * u * (10 + 1 / (1 - cfg.beta1)) * (g_max + float(np.finfo(dtype).tiny))


def second_moment_tolerance(expected: np.ndarray, g_max: np.ndarray, dtype, cfg: AdamConfig
                            ) -> np.ndarray:
    """Allowed |v - v_ref| (or of its running max) per element."""
    u = unit_roundoff(dtype)
    with np.errstate(over="ignore"):  # an overflowing g_max allows anything: inf
        scale = (10 + 1 / (1 - cfg.beta2)) * np.abs(expected) + 2 * g_max * g_max
    return SAFETY * u * (scale + float(np.finfo(dtype).tiny))
