"""Adam hyperparameters: one frozen, validated record shared by every backend."""
from __future__ import annotations

import decimal
import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["AdamConfig", "STATE_DTYPES", "ROUNDINGS", "MAX_SEED", "checked_lr"]

#: AdamConfig.state_dtype's values: None (the dtype of the weights stepped: the params',
#: or float32 with master weights), "float32", "bfloat16", or "int8"
#: (uint8 codes, a float32 scale per block).
STATE_DTYPES = (None, "float32", "bfloat16", "int8")
#: AdamConfig.rounding's values: how low-precision params without master weights are
#: written (see backends.formats).
ROUNDINGS = ("nearest", "stochastic", "kahan")
#: The largest seed: seeds are unsigned 64-bit integers.
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class AdamConfig:
    """Hyperparameters of Adam, with torch.optim.Adam's meaning for every option.

    weight_decay with ``decoupled=False`` adds ``weight_decay * p`` to the gradient (L2);
    with ``decoupled=True`` it multiplies ``p`` by ``1 - lr * weight_decay`` first (AdamW).
    ``amsgrad`` bias-corrects the running maximum of the second moment; ``maximize``
    steps along ``+gradient``. ``state_dtype`` is how m and v (and amsgrad's maximum) are
    stored: None keeps them in the dtype of the weights stepped (the params', float32 with
    master weights), "float32" or "bfloat16" in that dtype; "int8" stores float32 params'
    moments as one byte per element plus one float32 scale per block
    (``backends.int8_codec``).

    Low-precision params (bfloat16, float16; see ``backends.formats``): ``master_weights``
    keeps a float32 copy that the step updates and writes the params from, rounded to
    nearest even; without it ``rounding`` says how the float32 result is written: "nearest"
    (even), "stochastic" (bfloat16 only: up with probability equal to the remainder, from a
    hash of (``seed``, step, tensor, element), so the bits do not depend on threads or
    backend) or "kahan" (a compensation buffer of the params' dtype carries what rounding
    dropped). These options refuse float32 and float64 params (nothing to round).
    Bad values raise ValueError naming the field and value.
    Real-valued fields take any real number (int, float, NumPy scalar, Fraction, Decimal;
    not bool) that converts to a finite float, and hold that float.
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    amsgrad: bool = False
    maximize: bool = False
    state_dtype: str | None = None
    master_weights: bool = False
    rounding: str = "nearest"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("lr", "beta1", "beta2", "eps", "weight_decay"):
            object.__setattr__(self, name, _finite_float(name, getattr(self, name)))
        for name in ("decoupled", "amsgrad", "maximize", "master_weights"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        if self.state_dtype is not None and (type(self.state_dtype) is not str
                                             or self.state_dtype not in STATE_DTYPES):
            raise ValueError(f"Invalid state_dtype: {self.state_dtype!r} (expected one of "
                             f"{STATE_DTYPES})")
        if type(self.rounding) is not str or self.rounding not in ROUNDINGS:
            raise ValueError(f"Invalid rounding: {self.rounding!r} (expected one of "
                             f"{ROUNDINGS})")
        if (isinstance(self.seed, (bool, np.bool_)) or not isinstance(self.seed, numbers.Integral)
                or not 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"Invalid seed: {self.seed!r} (expected an int in 0..2**64-1)")
        object.__setattr__(self, "seed", int(self.seed))
        if self.master_weights and self.rounding != "nearest":
            raise ValueError(f"rounding={self.rounding!r} is for low-precision params without "
                             "master weights; with master_weights=True the params are "
                             "written from the float32 master copy rounded to nearest "
                             "(leave rounding='nearest')")
        if self.state_dtype == "int8" and (self.master_weights or self.rounding != "nearest"):
            raise ValueError("state_dtype='int8' is for float32 params; it does not take "
                             "master_weights or rounding (use state_dtype='bfloat16' or "
                             "'float32' with low-precision params)")
        _require(self.lr >= 0, "lr", self.lr, "lr >= 0")
        _require(0 <= self.beta1 < 1, "beta1", self.beta1, "0 <= beta1 < 1")
        _require(0 <= self.beta2 < 1, "beta2", self.beta2, "0 <= beta2 < 1")
        _require(self.eps > 0, "eps", self.eps, "eps > 0")
        _require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "weight_decay >= 0")

    def to_dict(self) -> dict:
        """The fields as a plain dict (for tables, state dicts and saved files)."""
        return asdict(self)


def checked_lr(lr) -> float:
    """``lr`` as a float, checked as ``AdamConfig`` checks its ``lr`` (a finite real >= 0):
    the per-step learning rate of ``Backend.step(..., lr=...)``. A float in range costs one
    comparison, so a schedule that changes lr every step pays no more."""
    if type(lr) is float and 0.0 <= lr < math.inf:  # NaN fails both comparisons
        return lr
    lr = _finite_float("lr", lr)
    _require(lr >= 0, "lr", lr, "lr >= 0")
    return lr


def _finite_float(name: str, value) -> float:
    """``value`` as a float, if it is a real number (not bool) with a finite float value."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal)):
        raise TypeError(f"{name} must be a real number (int, float, NumPy scalar, Fraction "
                        f"or Decimal; not bool), got {value!r}")
    try:
        converted = float(value)
    except (OverflowError, ValueError):  # 10**400, Decimal('sNaN')
        converted = math.inf
    if not math.isfinite(converted):
        raise ValueError(f"{name} must be finite, got {value!r} (a real number whose float "
                         "value is finite)")
    return converted


def _require(ok: bool, name: str, value: float, rule: str) -> None:
    if not ok:
        raise ValueError(f"Invalid {name}: {value!r} (expected {rule})")
