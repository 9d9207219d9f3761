"""NumPy's array header layout, as far as the validation reads it: the fields of
``PyArrayObject`` up to ``flags`` and the flags compared. Shared by the Python reader
(``_array_headers``) and the compiled one (``_header_kernels``)."""
from __future__ import annotations

import ctypes

__all__ = ["ArrayFields", "C_CONTIGUOUS", "ALIGNED", "WRITEABLE", "FLAG_MASK"]

C_CONTIGUOUS, ALIGNED, WRITEABLE = 0x1, 0x100, 0x400
FLAG_MASK = C_CONTIGUOUS | ALIGNED | WRITEABLE


class ArrayFields(ctypes.Structure):
    """numpy/ndarraytypes.h ``PyArrayObject_fields`` up to ``flags``."""

    _fields_ = [("ob_head", ctypes.c_char * object.__basicsize__),
                ("data", ctypes.c_void_p), ("nd", ctypes.c_int),
                ("dimensions", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("base", ctypes.c_void_p), ("descr", ctypes.c_void_p),
                ("flags", ctypes.c_int)]
