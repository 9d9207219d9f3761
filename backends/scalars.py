"""Per-step scalars every fused kernel takes, computed once per step on the host in double.

The kernels (NumPy, Numba, CUDA) all evaluate the same element-wise body::

    g = sign * g                       (maximize flips the gradient)
    g = g + l2 * p                     (only when the L2 flag is set)
    p = decay * p                      (AdamW; decay is exactly 1 otherwise)
    m = beta1 * m + one_minus_beta1 * g
    v = beta2 * v + (one_minus_beta2 * g) * g
    v_used = max(v_max, v) if amsgrad else v
    p = p - step_size * m / (sqrt(v_used) * inv_sqrt_bc2 + eps)

which is the reference's ``lr * m_hat / (sqrt(v_hat) + eps)`` with the bias corrections
folded into ``step_size = lr / (1 - beta1**t)`` and ``inv_sqrt_bc2 = 1 / sqrt(1 - beta2**t)``,
as torch.optim.Adam does. ``(one_minus_beta2 * g) * g`` scales before squaring, like
torch's addcmul, so float32 ``v`` overflows only for ``|g|`` above about 5.8e20.
"""
from __future__ import annotations

import math
import operator
from typing import NamedTuple

from .config import AdamConfig

__all__ = ["StepScalars", "step_constants", "adam_moments", "moments_with"]


class StepScalars(NamedTuple):
    """The host-side constants of step ``t`` (1-based) under ``cfg`` (a NamedTuple: cheap
    to build every step)."""

    sign: float
    l2: float
    use_l2: bool
    decay: float
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    step_size: float
    inv_sqrt_bc2: float
    eps: float
    amsgrad: bool

    @classmethod
    def for_step(cls, cfg: AdamConfig, t: int, lr: float | None = None) -> "StepScalars":
        """The scalars of step ``t`` under ``cfg`` at learning rate ``lr`` (None: cfg.lr)."""
        constants = step_constants(cfg.lr if lr is None else lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay,
                                   cfg.decoupled, cfg.maximize, t)
        use_l2 = cfg.weight_decay != 0 and not cfg.decoupled
        sign, l2, decay, beta1, omb1, beta2, omb2, step_size, inv_sqrt_bc2, eps = constants
        return cls(sign, l2, use_l2, decay, beta1, omb1, beta2, omb2, step_size, inv_sqrt_bc2,
                   eps, cfg.amsgrad)

    def floats(self) -> tuple[float, ...]:
        """The real-valued scalars in kernel argument order."""
        return (self.sign, self.l2, self.decay, self.beta1, self.one_minus_beta1,
                self.beta2, self.one_minus_beta2, self.step_size, self.inv_sqrt_bc2, self.eps)


def step_constants(lr, beta1, beta2, eps, weight_decay, decoupled, maximize, t):
    """The kernel's ten real constants of step ``t`` in double, in ``floats()`` order.

    Plain arithmetic on plain arguments, so the Numba backend compiles this same function
    into its kernels. ``t`` is made a float first: ``beta ** t`` is then C's ``pow`` in
    Python and in Numba alike (Numba would multiply out an integer power, off by an ulp).
    """
    t = float(t)
    bias_correction1 = 1.0 - beta1 ** t
    bias_correction2 = 1.0 - beta2 ** t
    use_l2 = weight_decay != 0 and not decoupled
    return (-1.0 if maximize else 1.0,                           # sign
            weight_decay if use_l2 else 0.0,                     # l2
            1.0 - lr * weight_decay if decoupled else 1.0,       # decay
            beta1, 1.0 - beta1, beta2, 1.0 - beta2,
            lr / bias_correction1,                               # step_size
            1.0 / math.sqrt(bias_correction2),                   # inv_sqrt_bc2
            eps)


def moments_with(mul, add):
    """Lines 1-5 of the body above for one element, with these multiply and add:
    ``moments(p, g, m, v, sign, l2, decay, beta1, one_minus_beta1, beta2, one_minus_beta2,
    use_l2)`` -> (decayed p, new m, new v). Plain arithmetic on scalars, so the Numba CPU
    and CUDA kernels compile this same body (in the arrays' dtype: they pass constants of
    that type); the int8 CUDA kernels pass IEEE round-to-nearest intrinsics, which no
    compiler fuses into multiply-adds."""
    def moments(p, g, m, v, sign, l2, decay, beta1, one_minus_beta1, beta2, one_minus_beta2,
                use_l2):
        g = mul(sign, g)
        if use_l2:
            g = add(g, mul(l2, p))
        p = mul(decay, p)
        m = add(mul(beta1, m), mul(one_minus_beta1, g))
        v = add(mul(beta2, v), mul(mul(one_minus_beta2, g), g))
        return p, m, v

    return moments


#: The body with plain operators (the Numba CPU kernels).
adam_moments = moments_with(operator.mul, operator.add)
