"""A template Adam backend: NumPy, one tensor at a time, the update written out plainly.

Subclass ``backends.Backend``, set ``name`` and ``device``, implement ``_update``. The base
class validates every argument before ``_update`` runs and counts the steps, so ``_update``
only does the arithmetic, in place, on lists of arrays of one dtype.
"""
import numpy as np

from backends import AdamConfig, Backend

__all__ = ["TemplateBackend"]


class TemplateBackend(Backend):
    name = "template"
    device = "cpu"

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq,
                cfg: AdamConfig, t: int, dtype: np.dtype, cache: dict) -> None:
        bias1 = 1.0 - cfg.beta1 ** t
        bias2 = 1.0 - cfg.beta2 ** t
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN propagate (IEEE)
            for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avg, exp_avg_sq)):
                g = -g if cfg.maximize else g
                if cfg.weight_decay and not cfg.decoupled:
                    g = g + cfg.weight_decay * p
                if cfg.weight_decay and cfg.decoupled:
                    p *= 1.0 - cfg.lr * cfg.weight_decay
                m *= cfg.beta1
                m += (1.0 - cfg.beta1) * g
                v *= cfg.beta2
                v += (1.0 - cfg.beta2) * g * g
                if max_exp_avg_sq is not None:
                    np.maximum(max_exp_avg_sq[i], v, out=max_exp_avg_sq[i])
                    v = max_exp_avg_sq[i]
                p -= cfg.lr * (m / bias1) / (np.sqrt(v / bias2) + cfg.eps)
