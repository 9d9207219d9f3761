"""bitsandbytes' Adam8bit on the CPU as a peer (its CPU path is eager PyTorch).

Tensors of at least ``min_8bit_size`` (4096) elements keep m and v as uint8 codes with one
float32 absmax per block of 256; smaller ones keep float32 state. ``moments`` decodes
the codes, so the check can show how far they are from the float64 reference.
Its step applies weight decay decoupled (``p *= 1 - lr * wd``) in Adam8bit and
AdamW8bit alike, so torch's L2 option is not offered; neither are amsgrad and maximize.
It steps in float32 (float64 params are rounded every step).
"""
from __future__ import annotations

import numpy as np
import torch
from bitsandbytes.functional import dequantize_blockwise
from bitsandbytes.optim import Adam8bit, AdamW8bit

from backends import AdamConfig

from ...core.steppers import UnsupportedOption
from .torch_adam import TorchStepper

__all__ = ["BnbAdam8bitStepper", "STEPPER"]

_BLOCK = 256  # bitsandbytes' block size on the CPU


class BnbAdam8bitStepper(TorchStepper):
    """bnb.optim.Adam8bit (AdamW8bit when decoupled) over CPU tensors."""

    def __init__(self, params: list[np.ndarray], cfg: AdamConfig):
        for option in ("amsgrad", "maximize"):
            if getattr(cfg, option):
                raise UnsupportedOption(f"{option}: bitsandbytes' Adam8bit has no such option")
        if cfg.weight_decay and not cfg.decoupled:
            raise UnsupportedOption("L2 weight decay: bitsandbytes' step decays "
                                    "decoupled (AdamW) in Adam8bit too")
        self._hold(params, "bnb-adam8bit")
        cls = AdamW8bit if cfg.decoupled else Adam8bit
        self._opt = cls(self._tensors, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                        weight_decay=cfg.weight_decay)

    def moments(self):
        out = {"exp_avg": [], "exp_avg_sq": [], "max_exp_avg_sq": None}
        for t in self._tensors:
            state = self._opt.state[t]
            if not state:
                continue
            for key, index in (("exp_avg", 1), ("exp_avg_sq", 2)):
                codes = state[f"state{index}"]
                if codes.dtype == torch.uint8:
                    codes = dequantize_blockwise(codes, absmax=state[f"absmax{index}"],
                                                 code=state[f"qmap{index}"], blocksize=_BLOCK)
                out[key].append(codes.numpy())
        return out


STEPPER = BnbAdam8bitStepper
