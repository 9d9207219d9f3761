"""optax's Adam under ``jax.jit`` with donated buffers, the way a JAX training loop runs it.

The step (``tx.update`` then ``optax.apply_updates``) is compiled ahead of time for the
peer's shapes (``compile_seconds``), so it can never recompile inside timed steps; params
and state are donated, so XLA updates them in place. Options: L2 is
``add_decayed_weights`` before Adam, AdamW is ``optax.adamw`` (``-lr * (adam + wd * p)``),
maximize negates the gradient first (``optax.scale(-1)``), which is what torch's flag does.
amsgrad is not offered: ``optax.amsgrad`` keeps the max of the bias-corrected second
moment, torch's Adam the max of the raw one, so the two differ after the first steps.
"""
from __future__ import annotations

import time

import jax

jax.config.update("jax_enable_x64", True)  # float64 params stay float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from backends import AdamConfig  # noqa: E402

from ...core.steppers import Stepper, UnsupportedOption  # noqa: E402

__all__ = ["OptaxStepper", "STEPPER", "optax_transform"]


def optax_transform(cfg: AdamConfig) -> optax.GradientTransformation:
    """The optax transformation a JAX user writes for ``cfg``'s options."""
    if cfg.amsgrad:
        raise UnsupportedOption("amsgrad: optax.amsgrad takes the max of the bias-corrected "
                                "second moment, torch's Adam the max of the raw one")
    kwargs = {"learning_rate": cfg.lr, "b1": cfg.beta1, "b2": cfg.beta2, "eps": cfg.eps}
    if cfg.decoupled:
        adam = optax.adamw(weight_decay=cfg.weight_decay, **kwargs)
    elif cfg.weight_decay:
        adam = optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.adam(**kwargs))
    else:
        adam = optax.adam(**kwargs)
    return optax.chain(optax.scale(-1.0), adam) if cfg.maximize else adam


class OptaxStepper(Stepper):
    """optax Adam over jax arrays on the CPU; ``step`` blocks until the update is done."""

    label = "optax"
    kind = "peer"
    device = "cpu"

    def __init__(self, params: list[np.ndarray], cfg: AdamConfig):
        tx = optax_transform(cfg)
        self._params = [jnp.array(p) for p in params]
        self._state = tx.init(self._params)

        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        start = time.perf_counter()
        grads = [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in self._params]
        self._step = jax.jit(step, donate_argnums=(0, 1)).lower(
            self._params, self._state, grads).compile()
        self.compile_seconds = time.perf_counter() - start

    def prepare(self, grads):
        return [jnp.array(g) for g in grads]

    def step(self, prepared) -> None:
        self._params, self._state = self._step(self._params, self._state, prepared)
        jax.block_until_ready(self._params)

    def params(self):
        return [np.array(p) for p in self._params]

    def moments(self):
        mu, nu = (optax.tree_utils.tree_get(self._state, key) for key in ("mu", "nu"))
        return {"exp_avg": [np.array(m) for m in mu], "exp_avg_sq": [np.array(v) for v in nu],
                "max_exp_avg_sq": None}

    def state_nbytes(self) -> int:
        """Bytes of every array in optax's state (moments and step count)."""
        return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(self._state))


STEPPER = OptaxStepper
