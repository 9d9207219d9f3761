"""DeepSpeed's ``DeepSpeedCPUAdam`` (the CPU optimizer of ZeRO-Offload) as a peer.

Its C++/AVX op is built by ninja the first time it is loaded (about 1-2 minutes, cached
in ~/.cache/torch_extensions; seconds after that): ``build`` does it when the peer is
collected, and its time is the subject's ``build_seconds``. ``adamw_mode=False`` is
torch's Adam (L2 weight decay added to the gradient), ``adamw_mode=True`` AdamW.
Not offered, rather than faked: amsgrad (DeepSpeed refuses it), maximize (no such flag),
float64 params (the op takes float32, float16 and bfloat16). It computes the step's
scalars (bias corrections, lr / bias correction) in float32.
"""
from __future__ import annotations

import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # the CPU op, whatever GPU is present

import numpy as np  # noqa: E402
from deepspeed.ops.adam import DeepSpeedCPUAdam  # noqa: E402
from deepspeed.ops.op_builder import CPUAdamBuilder  # noqa: E402

from backends import AdamConfig  # noqa: E402

from ...core.steppers import UnsupportedOption  # noqa: E402
from .torch_adam import TorchStepper  # noqa: E402

__all__ = ["DeepSpeedStepper", "STEPPER", "build"]


def build() -> None:
    """Build (first time) or load the cpu_adam op."""
    CPUAdamBuilder().load()


class DeepSpeedStepper(TorchStepper):
    """DeepSpeedCPUAdam over CPU tensors that share memory with NumPy arrays."""

    def __init__(self, params: list[np.ndarray], cfg: AdamConfig):
        for option in ("amsgrad", "maximize"):
            if getattr(cfg, option):
                raise UnsupportedOption(f"{option}: DeepSpeedCPUAdam has no such option")
        if any(np.dtype(p.dtype) != np.float32 for p in params):
            raise UnsupportedOption("float64: DeepSpeedCPUAdam steps float32, float16 and "
                                    "bfloat16 params")
        self._hold(params, "deepspeed-cpu-adam")
        self._opt = DeepSpeedCPUAdam(self._tensors, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                     eps=cfg.eps, weight_decay=cfg.weight_decay,
                                     adamw_mode=cfg.decoupled)


STEPPER = DeepSpeedStepper
