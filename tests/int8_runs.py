"""Comparing two runs of int8 state ((params, state_dict) pairs) from different backends.

Tensors with int8 state (codes, scales, params) must match bit for bit: the GPU kernels
round every operation on its own, as the CPU does. Tensors below the int8 threshold keep
float32 state and are stepped by the backend's float32 kernel, which on a real GPU
contracts multiply-adds into FMAs (``harness.subjects.emulated_gpu`` models it): there
they are held to a few float32 roundings of the tensor's largest magnitude instead (on an
H200 these params were 1 ulp from NumPy's in 3 of 4095 elements after one step, and m,
where beta1 * m and (1 - beta1) * g cancel, up to 5.4e-7 away: 3.5e-5 of that element,
far under 1e-6 of the largest)."""
import numpy as np

from backends.int8_codec import has_int8_state

#: A few float32 roundings (2^-23 = 1.2e-7) per step, for the few steps these tests take.
FUSED_RTOL = 1e-6


def canonical_bits(x):
    """Bytes of ``x`` as integers, every float NaN as one NaN: a real GPU returns its
    canonical NaN where x86 propagates an operand's."""
    if x.dtype == np.float32:
        return np.where(np.isnan(x), np.uint32(0x7FC00000), x.view(np.uint32))
    return x.view(np.uint8)


def assert_same_run(expected, found, fused_float32: bool = False) -> None:
    """int8-state tensors bit for bit; float32-state tensors bit for bit too, or with
    ``fused_float32`` (``found`` ran on a real GPU) within FUSED_RTOL of each element
    plus FUSED_RTOL of the array's largest magnitude."""
    (pa, sa), (pb, sb) = expected, found
    exact = [not fused_float32 or has_int8_state(p) for p in pa]
    for i, (x, y) in enumerate(zip(pa, pb)):
        _compare(x, y, exact[i], f"params[{i}]")
    assert sa.keys() == sb.keys()
    for key in sa:
        if key == "step" or sa[key] is None:
            assert sa[key] == sb[key], key
            continue
        for i, (x, y) in enumerate(zip(sa[key], sb[key])):
            assert (x is None) == (y is None), (key, i)
            if x is not None:
                assert x.dtype == y.dtype and x.shape == y.shape, (key, i)
                _compare(x, y, exact[i], f"{key}[{i}]")


def _compare(x, y, exact: bool, what: str) -> None:
    if exact or x.dtype != np.float32:
        np.testing.assert_array_equal(canonical_bits(x), canonical_bits(y), err_msg=what)
    else:
        scale = float(np.nanmax(np.abs(x), initial=0.0))
        np.testing.assert_allclose(y, x, rtol=FUSED_RTOL, atol=FUSED_RTOL * scale,
                                   err_msg=what)
