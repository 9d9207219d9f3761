"""Numba CUDA kernels: the element-wise Adam body in a grid-stride loop."""
from __future__ import annotations

import math

from numba import cuda

from .scalars import adam_moments

__all__ = ["adam", "adam_amsgrad"]


_moments = cuda.jit(device=True, inline=True)(adam_moments)


@cuda.jit
def adam(p, g, m, v, sign, l2, decay, beta1, one_minus_beta1, beta2, one_minus_beta2,
         step_size, inv_sqrt_bc2, eps, use_l2):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi, mi, vi = _moments(p[i], g[i], m[i], v[i], sign, l2, decay, beta1,
                              one_minus_beta1, beta2, one_minus_beta2, use_l2)
        m[i] = mi
        v[i] = vi
        p[i] = pi - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)


@cuda.jit
def adam_amsgrad(p, g, m, v, vmax, sign, l2, decay, beta1, one_minus_beta1, beta2,
                 one_minus_beta2, step_size, inv_sqrt_bc2, eps, use_l2):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi, mi, vi = _moments(p[i], g[i], m[i], v[i], sign, l2, decay, beta1,
                              one_minus_beta1, beta2, one_minus_beta2, use_l2)
        m[i] = mi
        v[i] = vi
        vm = vmax[i]
        if vi > vm or vi != vi:
            vm = vi
        vmax[i] = vm
        p[i] = pi - step_size * mi / (math.sqrt(vm) * inv_sqrt_bc2 + eps)
