"""How far a backend may be from the float64 reference: every bound, with its reason.

u is the unit roundoff of the dtype (2**-24 for float32, 2**-53 for float64), t the step,
g_eff = g + weight_decay*p the gradient the moments see, G the largest |g| + weight_decay*|p|
seen so far, D = sqrt(v_hat) + eps the update's denominator and spike =
max(1, (1-beta1)/sqrt(1-beta2)) about the largest |m_hat| / sqrt(v_hat) (a lone gradient
spike). A correct kernel differs from the reference only by rounding, and by what rounding
feeds back through L2 weight decay:

- first moment: each step rounds terms as large as the gradient, and those errors decay by
  beta1, so they add up to u/(1-beta1) times G (m can be near 0 by cancellation, so its
  own size is no scale): SAFETY * u * (10 + 1/(1-beta1)) * G.
- second moment (and its running max): a sum of positive terms, so its own rounding is
  relative to itself, plus the error of squaring a g_eff that cancelled, 2u*G**2:
  SAFETY * u * ((10 + 1/(1-beta2)) * |v| + 2 * G**2).
- parameters: each step rounds p (u*|p|) and computes the update with a relative error of
  a few u amplified by the moments' relative errors: K * (|p| + lr*(10 + 1/(1-beta1) +
  0.5/(1-beta2))*spike) after K steps. The moments' absolute errors (where g_eff or m
  cancelled) move the update by lr*dm_hat/D and lr*spike*dv_hat/(2*D**2); with r = G/D and
  S = sum_k beta1^(t-k) (1-beta1^k) / (1-beta1^t) (the weights of m's own roundings) each
  step adds lr * ((2 + 3*S) * r + 2 * spike * r**2 [L2 only]). All times SAFETY * u.
- feedback (L2 only): a backend's g_eff uses its own p, off by up to the parameters'
  bound e_p, so its g_eff is off by weight_decay*e_p, which enters m and v as a gradient
  error would (decaying by beta1 and beta2) and the update through them again. Where
  lr*weight_decay/D is large this grows step by step: such problems are ill-conditioned
  and the bound says so instead of failing a correct kernel.

SAFETY = 4 leaves room for the bounds' constants; a bug (a wrong bias correction, a
swapped beta) moves results by a fraction of lr, orders of magnitude beyond these.
"""
from __future__ import annotations

import numpy as np

from backends import AdamConfig
from backends.formats import finfo

__all__ = ["SAFETY", "unit_roundoff", "ErrorBounds"]

SAFETY = 4.0


def unit_roundoff(dtype) -> float:
    """Half the distance from 1 to the next float: 2**-24 (float32), 2**-53 (float64)."""
    return float(finfo(dtype).eps) / 2


class ErrorBounds:
    """Allowed |x - x_ref| per element of one tensor's p, m, v and v_max after each step;
    ``advance`` carries the bounds through one reference step."""

    def __init__(self, shape, dtype, cfg: AdamConfig):
        self.cfg = cfg
        self.u = unit_roundoff(dtype)
        self.tiny = float(finfo(dtype).tiny)
        self.spike = max(1.0, (1.0 - cfg.beta1) / np.sqrt(1.0 - cfg.beta2))
        self.l2 = cfg.weight_decay if not cfg.decoupled else 0.0
        zeros = np.zeros(shape)
        self.g_max = zeros
        self.update_errors = zeros  # summed absolute update errors, lr*... above
        self.m_feedback = zeros
        self.v_feedback = zeros
        self.v_max_feedback = zeros
        self.p = self.m = self.v = self.v_max = zeros

    def advance(self, t: int, p_before, g, p_after, state) -> None:
        """Bounds after step ``t``: ``p_before``/``p_after`` and ``state`` (a ReferenceState)
        are the reference's, ``g`` the step's raw gradient."""
        cfg, u = self.cfg, self.u
        with np.errstate(over="ignore", invalid="ignore"):  # overflow allows anything: inf
            g_eff = np.abs(np.asarray(g, dtype=np.float64)) + cfg.weight_decay * np.abs(p_before)
            self.g_max = np.fmax(self.g_max, g_eff)
            if self.l2:
                self._feed_back(self.l2 * self.p)
            v_used = state.v_max if cfg.amsgrad else state.v
            v_feedback = self.v_max_feedback if cfg.amsgrad else self.v_feedback
            denominator = np.sqrt(v_used / (1.0 - cfg.beta2**t)) + cfg.eps
            self.update_errors = self.update_errors + cfg.lr * (
                SAFETY * u * self._moment_rounding_drift(t, denominator)
                + self.m_feedback / (1.0 - cfg.beta1**t) / denominator
                + self.spike * v_feedback / (1.0 - cfg.beta2**t) / (2 * denominator**2))
            self.p = self._param_bound(t, p_after)
            self.m = SAFETY * u * (10 + 1 / (1 - cfg.beta1)) * (self.g_max + self.tiny) \
                + self.m_feedback
            self.v = self._second_moment_bound(state.v) + self.v_feedback
            if cfg.amsgrad:
                self.v_max = self._second_moment_bound(state.v_max) + self.v_max_feedback

    def _feed_back(self, g_error):
        """The moments' errors from a g_eff that is off by ``g_error``."""
        b1, b2 = self.cfg.beta1, self.cfg.beta2
        square_error = g_error * (2 * self.g_max + g_error)
        self.m_feedback = b1 * self.m_feedback + (1 - b1) * g_error
        self.v_feedback = b2 * self.v_feedback + (1 - b2) * square_error
        self.v_max_feedback = np.fmax(self.v_max_feedback, self.v_feedback)

    def _moment_rounding_drift(self, t, denominator):
        """(2 + 3*S) * r + 2 * spike * r**2 [L2]: the update's error per unit of u from the
        moments' absolute rounding errors (module doc)."""
        b1 = self.cfg.beta1
        decay_weights = 1 / (1 - b1) - t * b1**t / (1 - b1**t)
        ratio = np.where(self.g_max == 0, 0.0, self.g_max / denominator)
        drift = (2 + 3 * decay_weights) * ratio
        if self.l2:
            drift = drift + 2 * self.spike * ratio * ratio
        return drift

    def _param_bound(self, t, p_after):
        cfg = self.cfg
        amplification = 10 + 1 / (1 - cfg.beta1) + 0.5 / (1 - cfg.beta2)
        scale = np.abs(p_after) + cfg.lr * amplification * self.spike
        return SAFETY * t * self.u * scale + self.update_errors

    def _second_moment_bound(self, expected):
        scale = (10 + 1 / (1 - self.cfg.beta2)) * np.abs(expected) + 2 * self.g_max**2
        return SAFETY * self.u * (scale + self.tiny)
