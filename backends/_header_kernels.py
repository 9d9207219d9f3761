"""The compiled reader of ``_array_headers``: NumPy array headers read at their addresses."""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from ._array_fields import FLAG_MASK, ArrayFields

__all__ = ["read", "match"]

_DATA, _ND = ArrayFields.data.offset, ArrayFields.nd.offset
_DIMS, _DESCR = ArrayFields.dimensions.offset, ArrayFields.descr.offset
_FLAGS = ArrayFields.flags.offset
_I64, _I32 = np.int64(0), np.int32(0)


@intrinsic
def _load(typingctx, address, like):
    """The value of ``like``'s type stored at ``address``."""
    signature = like(types.int64, like)

    def codegen(context, builder, sig, args):
        pointer = builder.inttoptr(args[0], context.get_value_type(like).as_pointer())
        return builder.load(pointer)

    return signature, codegen


@njit(inline="always", cache=True)
def _header(obj):
    """(data, dtype, flags & FLAG_MASK, ndim, size, shape hash) of the array at ``obj``."""
    nd = np.int64(_load(obj + _ND, _I32))
    dims = _load(obj + _DIMS, _I64)
    size, h = np.int64(1), np.int64(0)
    for d in range(nd):
        n = _load(dims + 8 * d, _I64)
        size *= n
        h = h * 1000003 + n
    return (_load(obj + _DATA, _I64), _load(obj + _DESCR, _I64),
            np.int64(_load(obj + _FLAGS, _I32) & FLAG_MASK), nd, size, h)


@njit(cache=True)
def read(objects, out):
    """Header row i of ``out`` for the array whose id is ``objects[i]``."""
    for i in range(objects.size):
        data, descr, flags, nd, size, h = _header(objects[i])
        out[i, 0], out[i, 1], out[i, 2] = data, descr, flags
        out[i, 3], out[i, 4], out[i, 5] = nd, size, h


@njit(cache=True)
def match(objects, expected):
    """Whether every array's header still equals its row of ``expected``."""
    for i in range(objects.size):
        data, descr, flags, nd, size, h = _header(objects[i])
        if (data != expected[i, 0] or descr != expected[i, 1] or flags != expected[i, 2]
                or nd != expected[i, 3] or size != expected[i, 4] or h != expected[i, 5]):
            return False
    return True
