"""A deliberately wrong backend for tests: NumPy Adam without bias correction."""
from backends.cpu.numpy import NumpyBackend

#: A step so late that both bias corrections, 1 - beta**t, are exactly 1.0.
NO_BIAS_CORRECTION_STEP = 10**6


class NoBiasCorrection(NumpyBackend):
    name = "broken"

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                cache):
        super()._update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg,
                        NO_BIAS_CORRECTION_STEP, dtype, cache)
