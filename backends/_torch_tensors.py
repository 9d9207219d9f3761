"""What the torch.optim adapter accepts, in one place, and zero-copy array views of it.

Every check names the tensor as ``param_groups[i]['params'][j]`` and raises before the
step changes anything. The dtypes the adapter steps are the keys of ``FLOAT_DTYPES``
(a new one is one entry here, once the backends step it).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["FLOAT_DTYPES", "where", "check_param", "check_grad", "check_moment",
           "array_view"]

#: torch dtype -> the NumPy dtype the backends step it as.
FLOAT_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
#: Refused with a pointer to the NumPy level, which steps them (backends.formats).
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def where(i: int, j: int) -> str:
    """How errors name the j-th param of param group i."""
    return f"param_groups[{i}]['params'][{j}]"


def _dense(t, what: str, device: torch.device | None) -> None:
    """A strided, contiguous tensor (on ``device`` when given): what a kernel can read
    as one span of memory."""
    if t.layout is not torch.strided:
        raise ValueError(f"{what} has layout {t.layout}; Adam needs dense (strided) tensors")
    if device is not None and t.device != device:
        raise ValueError(f"{what} is on {t.device} but its param is on {device}")
    if not t.is_contiguous():
        raise ValueError(f"{what} is not contiguous (strides {t.stride()} for shape "
                         f"{tuple(t.shape)}); make it contiguous (.contiguous())")


def check_param(p, what: str, device: str | None = None) -> None:
    """A param this adapter can step on a backend of ``device`` ("cpu" or "cuda")."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{what} is {type(p).__name__}, not a torch.Tensor")
    if p.is_complex():
        raise TypeError(f"{what} is complex ({p.dtype}); this Adam steps real tensors "
                        "(view it as real with torch.view_as_real)")
    if p.dtype not in FLOAT_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)
        hint = (" (bfloat16 and float16 params, with master weights and rounding, are "
                "stepped by the NumPy-level backends.Adam, not by the torch adapter yet: "
                "docs/low-precision.md)" if p.dtype in _LOW_PRECISION else "")
        raise TypeError(f"{what} has dtype {p.dtype}; expected one of {names}{hint}")
    _dense(p, what, None)
    if device is not None and p.device.type != device:
        raise ValueError(f"{what} is on {p.device} but the backend steps {device} tensors "
                         f"(pick a {p.device.type} backend)")


def check_grad(g, p, what: str) -> None:
    """``g`` is a gradient the kernels can read for ``p``."""
    what = f"{what}.grad"
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"{what} is {type(g).__name__}, not a torch.Tensor")
    if g.is_sparse or g.layout is not torch.strided:
        raise RuntimeError(f"{what} is sparse ({g.layout}); Adam does not support sparse "
                           "gradients, please consider SparseAdam instead")
    _same_kind(g, p, what)


def check_moment(value, p, what: str) -> None:
    """A state tensor (exp_avg, ...) the kernels can read and write for ``p``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} is {type(value).__name__}, not a torch.Tensor")
    _same_kind(value, p, what)


def _same_kind(t, p, what: str) -> None:
    if t.dtype != p.dtype:
        raise TypeError(f"{what} has dtype {t.dtype} but the param has {p.dtype}")
    if t.shape != p.shape:
        raise ValueError(f"{what} has shape {tuple(t.shape)} but the param has "
                         f"{tuple(p.shape)}")
    _dense(t, what, p.device)


def array_view(t, backend):
    """An array of ``backend``'s type over ``t``'s memory (no copy): a NumPy view of a
    CPU tensor, a CuPy or Numba device array over a CUDA tensor's
    ``__cuda_array_interface__``."""
    if backend.device == "cpu":
        return t.detach().numpy()
    from .cuda.device import device_array_view

    view = device_array_view(t.detach(), backend.array_type)
    if view is not None:
        return view
    raise TypeError(f"the {backend.name} backend's arrays ({backend.array_type.__name__}) "
                    "cannot view torch CUDA tensors; use numba-cuda or cupy")
