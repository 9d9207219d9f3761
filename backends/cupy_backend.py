"""Backend "cupy": one fused CuPy ElementwiseKernel per step.

The kernel body is the C spelling of the element-wise update every backend shares
(backends.scalars); the step's scalars are passed as arguments, so nothing is recompiled
between steps and no device memory is allocated.
"""
from __future__ import annotations

from ._gpu import GpuBackend

__all__ = ["CupyBackend"]

_PARAMS_IN = ("T g, T sign, T l2, T decay, T beta1, T one_minus_beta1, T beta2, "
              "T one_minus_beta2, T step_size, T inv_sqrt_bc2, T eps, bool use_l2")
_BODY = """
    T gi = sign * g;
    T pi = p;
    if (use_l2) gi = gi + l2 * pi;
    pi = decay * pi;
    T mi = beta1 * m + one_minus_beta1 * gi;
    T vi = beta2 * v + (one_minus_beta2 * gi) * gi;
    m = mi;
    v = vi;
    {amsgrad}
    p = pi - step_size * mi / (sqrt(vi) * inv_sqrt_bc2 + eps);
"""
_AMSGRAD = "if (vi > vmax || vi != vi) vmax = vi; vi = vmax;"


class CupyBackend(GpuBackend):
    """Device-resident Adam through CuPy; one launch per step."""

    name = "cupy"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import cupy
        except ImportError as exc:
            return f"cupy is not installed ({exc}); pip install -e '.[cuda12]' or '.[cuda13]'"
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                return "no CUDA device found by cupy"
        except Exception as exc:  # CUDARuntimeError and friends: report which
            return f"CUDA runtime error: {exc}"
        return None

    def __init__(self):
        import cupy

        self._cupy = cupy
        self.array_type = cupy.ndarray
        self._kernel = cupy.ElementwiseKernel(
            _PARAMS_IN, "T p, T m, T v", _BODY.format(amsgrad=""), "adam_step")
        self._kernel_amsgrad = cupy.ElementwiseKernel(
            _PARAMS_IN, "T p, T m, T v, T vmax", _BODY.format(amsgrad=_AMSGRAD),
            "adam_step_amsgrad")
        self.compile_seconds = self._timed_warm_up()

    def asarray(self, a):
        return self._cupy.asarray(a)

    def empty(self, n, dtype):
        return self._cupy.empty(n, dtype=dtype)

    def synchronize(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()

    def _is_writeable(self, x) -> bool:
        return True

    def address(self, a) -> int:
        return a.data.ptr

    def span(self, first, n):
        return self._cupy.ndarray((n,), dtype=first.dtype, memptr=first.data)

    def _launch(self, p, g, m, v, vmax, scalars, dtype):
        if p.size == 0:
            return
        args = tuple(dtype.type(x) for x in scalars.floats())
        if vmax is None:
            self._kernel(g, *args, scalars.use_l2, p, m, v)
        else:
            self._kernel_amsgrad(g, *args, scalars.use_l2, p, m, v, vmax)
