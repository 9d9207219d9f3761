"""What the torch.optim adapter accepts, in one place, and zero-copy array views of it.

Every check names the tensor as ``param_groups[i]['params'][j]`` and raises before the
step changes anything. The dtypes the adapter steps are the keys of ``FLOAT_DTYPES``
(a new one is one entry here, once the backends step it).
"""
from __future__ import annotations

import numpy as np
import torch

from .formats import BFLOAT16
from .int8_codec import INT8_MOMENTS, SCALE_NAMES, has_int8_state, n_blocks
from .int8_step import int8_backend_refusal
from .low_precision_step import backend_refusal, dtype_refusal, tensor_layout

__all__ = ["FLOAT_DTYPES", "where", "check_param", "check_grad", "check_options",
           "check_tensor_of", "torch_dtype", "state_layout", "new_state", "array_view",
           "has_options"]

#: torch dtype -> the NumPy dtype the backends step it as.
FLOAT_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
                torch.bfloat16: BFLOAT16, torch.float16: np.dtype(np.float16)}
#: NumPy dtype -> torch dtype of the state tensors (FLOAT_DTYPES reversed, and int8 codes).
_TORCH_DTYPES = {**{v: k for k, v in FLOAT_DTYPES.items()}, np.dtype(np.uint8): torch.uint8}


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
        raise TypeError(f"{what} has dtype {p.dtype}; expected one of {names}")
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
    check_tensor_of(g, p, what, grad_dtype(g, p), p.shape)


def grad_dtype(g, p) -> torch.dtype:
    """The dtype ``p``'s gradient may have: the param's, or float32 for a bfloat16 or
    float16 param (as the NumPy level takes; torch allows it once ``p.grad_dtype`` is
    set)."""
    if g.dtype == torch.float32 and p.dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return p.dtype


def has_options(cfg) -> bool:
    """Whether ``cfg`` asks for a state or rounding the plain float step has not."""
    return cfg.state_dtype is not None or cfg.master_weights or cfg.rounding != "nearest"


def check_options(p, what: str, cfg, backend) -> None:
    """``p`` can take ``cfg``'s state_dtype, master weights and rounding on ``backend``
    (the NumPy-level rules, ``low_precision_step.dtype_refusal``)."""
    low = has_options(cfg) or p.dtype in (torch.bfloat16, torch.float16)
    if cfg.state_dtype == "int8":
        if p.dtype != torch.float32:
            raise TypeError(f"state_dtype='int8' needs float32 params; {what} has dtype "
                            f"{p.dtype}")
        if not backend.supports_int8_state:
            raise ValueError(f"{what}: {int8_backend_refusal(backend)}")
        return
    if low and not backend.supports_low_precision:
        raise ValueError(f"{what}: {backend_refusal(backend)}")
    refusal = dtype_refusal(FLOAT_DTYPES[p.dtype], cfg, what) if has_options(cfg) else None
    if refusal is not None:
        raise TypeError(refusal)


def state_layout(view, cfg) -> dict:
    """{state key: (NumPy dtype, shape)} of a param whose array view is ``view`` under
    ``cfg``, as the NumPy-level state holds it (int8 codes and scales, master copies,
    Kahan compensation: ``low_precision_step.tensor_layout``)."""
    shape = tuple(view.shape)
    if cfg.state_dtype != "int8":
        return {k: (d, shape) for k, d in tensor_layout(view.dtype, cfg).items()}
    layout = {}
    for name, scale in list(zip(INT8_MOMENTS, SCALE_NAMES))[:2 + cfg.amsgrad]:
        if has_int8_state(view):
            layout[name] = (np.dtype(np.uint8), shape)
            layout[scale] = (np.dtype(np.float32), (n_blocks(view.size),))
        else:
            layout[name] = (np.dtype(np.float32), shape)
    return layout


def new_state(p, layout: dict) -> dict:
    """A param's fresh state entries: zeros, and the master copy as ``p`` in float32."""
    return {name: p.detach().to(torch.float32, copy=True) if name == "master_params" else
            torch.zeros(shape, dtype=torch_dtype(dtype), device=p.device)
            for name, (dtype, shape) in layout.items()}


def torch_dtype(dtype) -> torch.dtype:
    """The torch dtype of a state layout's NumPy dtype."""
    return _TORCH_DTYPES[np.dtype(dtype)]


def check_tensor_of(value, p, what: str, dtype: torch.dtype, shape: tuple) -> None:
    """A tensor (gradient, state) the kernels can read and write for ``p``: ``dtype``,
    ``shape``, dense on ``p``'s device."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} is {type(value).__name__}, not a torch.Tensor")
    if value.dtype != dtype:
        raise TypeError(f"{what} has dtype {value.dtype}; expected {dtype} (the param "
                        f"has {p.dtype})")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(value.shape)}; expected {tuple(shape)} "
                         f"(the param has {tuple(p.shape)})")
    _dense(value, what, p.device)


def array_view(t, backend):
    """An array of ``backend``'s type over ``t``'s memory (no copy): a NumPy view of a
    CPU tensor, a CuPy or Numba device array over a CUDA tensor's
    ``__cuda_array_interface__``."""
    if backend.device == "cpu":
        if t.requires_grad:
            t = t.detach()
        if t.dtype == torch.bfloat16:  # NumPy has no bfloat16: its bits, as ml_dtypes'
            return t.view(torch.int16).numpy().view(BFLOAT16)
        return t.numpy()
    from .cuda.device import device_array_view

    if t.dtype == torch.bfloat16:  # __cuda_array_interface__ has no bfloat16: its bits
        view = device_array_view(t.detach().view(torch.int16), backend.array_type)
        view = None if view is None else view.view(BFLOAT16)
    else:
        view = device_array_view(t.detach(), backend.array_type)
    if view is not None:
        return view
    raise TypeError(f"the {backend.name} backend's arrays ({backend.array_type.__name__}) "
                    "cannot view torch CUDA tensors; use numba-cuda or cupy")
