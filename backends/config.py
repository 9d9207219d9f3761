"""Adam hyperparameters: one frozen, validated record shared by every backend."""
from __future__ import annotations

import decimal
import math
import numbers
from dataclasses import asdict, dataclass

__all__ = ["AdamConfig", "STATE_DTYPES", "checked_lr"]

#: AdamConfig.state_dtype's values: None (the params' dtype) or "int8" (blockwise 8-bit).
STATE_DTYPES = (None, "int8")


@dataclass(frozen=True)
class AdamConfig:
    """Hyperparameters of Adam, with torch.optim.Adam's meaning for every option.

    weight_decay with ``decoupled=False`` adds ``weight_decay * p`` to the gradient (L2);
    with ``decoupled=True`` it multiplies ``p`` by ``1 - lr * weight_decay`` first (AdamW).
    ``amsgrad`` bias-corrects the running maximum of the second moment; ``maximize``
    steps along ``+gradient``. ``state_dtype`` is how m and v (and amsgrad's maximum) are
    stored: None keeps them in the params' dtype; "int8" stores float32 params' moments as
    one byte per element plus one float32 scale per block (``backends.blockwise``). Bad values raise ValueError naming the field and value.
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

    def __post_init__(self) -> None:
        for name in ("lr", "beta1", "beta2", "eps", "weight_decay"):
            object.__setattr__(self, name, _finite_float(name, getattr(self, name)))
        for name in ("decoupled", "amsgrad", "maximize"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        if self.state_dtype is not None and (type(self.state_dtype) is not str
                                             or self.state_dtype not in STATE_DTYPES):
            raise ValueError(f"Invalid state_dtype: {self.state_dtype!r} (expected one of "
                             f"{STATE_DTYPES})")
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
