"""``adam-bench demo --format ...``: training in each format against fp32, on the digits
MLP (``harness.demo.digits``) and on a least-squares problem.

The params live in the format's dtype; the forward pass and gradients are float32 from
the params' values (as a bf16 training step computes), the gradients are then stored in
the params' dtype, and ``Adam`` steps them with the format's options. Every format
starts from the same values and sees the same data; the table gives each final loss
and its ratio to fp32's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from backends import Adam

from ..core.formats import FORMATS, Format
from ..core.results_io import write_tables
from .digits import accuracy, init_params, load_digits_split, loss_and_grads

__all__ = ["train_digits", "train_least_squares", "run_format_demo"]


def _optimizer(fmt: Format, params32, backend: str, lr: float):
    params = [p.astype(fmt.dtype) for p in params32]
    return params, Adam(params, backend=backend, lr=lr, **fmt.options)


def train_digits(fmt: Format, steps: int, lr: float, backend: str = "numba", seed: int = 0):
    """(final training loss, test accuracy) of the digits MLP trained in ``fmt``."""
    from threadpoolctl import threadpool_limits

    x_train, y_train, x_test, y_test = load_digits_split(seed)
    params, opt = _optimizer(fmt, init_params(seed), backend, lr)
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(steps):
            _, grads = loss_and_grads([p.astype(np.float32) for p in params], x_train, y_train)
            opt.step([g.astype(fmt.dtype) for g in grads])
        values = [p.astype(np.float32) for p in params]
        return loss_and_grads(values, x_train, y_train)[0], accuracy(values, x_test, y_test)


def train_least_squares(fmt: Format, steps: int, lr: float, backend: str = "numba",
                        seed: int = 0) -> float:
    """Final loss mean((A x - b)^2) / 2 of x (256 unknowns, 1024 rows) trained in
    ``fmt`` from x = 1; b = A x* + noise, so the optimum's loss is the noise's."""
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((1024, 256)) / 16).astype(np.float32)
    b = a @ rng.standard_normal(256).astype(np.float32) + \
        (0.01 * rng.standard_normal(1024)).astype(np.float32)
    params, opt = _optimizer(fmt, [np.ones(256, np.float32)], backend, lr)
    for _ in range(steps):
        x = params[0].astype(np.float32)
        grad = a.T @ (a @ x - b) / len(b)
        opt.step([grad.astype(fmt.dtype)])
    r = a @ params[0].astype(np.float32) - b
    return float(0.5 * np.mean(r * r))


def run_format_demo(formats: list[str], steps: int = 300, lr: float = 1e-3,
                    backend: str = "numba", out_stem: str | Path | None = None,
                    show=print) -> pd.DataFrame:
    """Train both problems in every format (fp32 added if missing); the table of final
    losses, their ratios to fp32's and the digits test accuracy."""
    names = ["fp32"] + [f for f in formats if f != "fp32"]
    rows = []
    for name in names:
        fmt = FORMATS[name]
        loss, acc = train_digits(fmt, steps, lr, backend)
        rows.append({"format": name, "digits_loss": loss, "digits_test_accuracy": acc,
                     "least_squares_loss": train_least_squares(fmt, steps, lr * 10,
                                                               backend)})
    df = pd.DataFrame(rows)
    for problem in ("digits", "least_squares"):
        df[f"{problem}_loss_vs_fp32"] = df[f"{problem}_loss"] / df[f"{problem}_loss"][0]
    df.insert(1, "steps", steps)
    df.insert(2, "lr_digits", lr)
    show(df.round(4).to_markdown(index=False))
    if out_stem is not None:
        write_tables(df, Path(out_stem), markdown=df.round(4))
    return df
