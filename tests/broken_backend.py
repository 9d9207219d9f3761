"""A deliberately wrong backend for tests: NumPy Adam without bias correction."""
from backends.numpy_backend import NumpyBackend


class NoBiasCorrection(NumpyBackend):
    name = "broken"

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars, dtype,
                cache):
        wrong = scalars._replace(step_size=scalars.step_size * (1 - scalars.beta1),
                                 inv_sqrt_bc2=1.0)
        super()._update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, wrong, dtype, cache)
