"""A real use: an MLP on scikit-learn's digits, trained with ``Adam`` over every CPU backend.

The network (64 -> 64 tanh -> 10 softmax, float32) and its gradients are plain NumPy; only
the optimizer changes between runs, all from the same seed, so the loss curves must
coincide (up to float32 rounding, which full-batch training does not amplify much).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from backends import Adam, list_backends

from ..core.results_io import write_tables

__all__ = ["DemoResult", "load_digits_split", "init_params", "loss_and_grads", "accuracy", "train",
           "run_demo", "plot_losses", "LOSS_RTOL"]

#: Final losses of different backends may differ by this much, relatively: float32 rounding
#: of 200 Adam steps (each backend rounds differently, see harness/check/tolerances.py), as it
#: propagates through training, measured at about 1e-6 here; 1e-4 leaves room.
LOSS_RTOL = 1e-4


def load_digits_split(seed: int = 0):
    """(x_train, y_train, x_test, y_test): 8x8 digits scaled to [0, 1], 75/25 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.75 * len(x))
    train_idx, test_idx = order[:cut], order[cut:]
    return x[train_idx], data.target[train_idx], x[test_idx], data.target[test_idx]


def init_params(seed: int, hidden: int = 64):
    """The MLP's (w1, b1, w2, b2), drawn from ``seed``: every run of the demo starts here."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((64, hidden)) / 8.0).astype(np.float32),
            np.zeros(hidden, np.float32),
            (rng.standard_normal((hidden, 10)) / np.sqrt(hidden)).astype(np.float32),
            np.zeros(10, np.float32)]


def _forward(params, x):
    w1, b1, w2, b2 = params
    h = np.tanh(x @ w1 + b1)
    logits = h @ w2 + b2
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return h, probs


def loss_and_grads(params, x, y):
    """Mean cross-entropy and its gradients with respect to (w1, b1, w2, b2)."""
    w1, b1, w2, b2 = params
    h, probs = _forward(params, x)
    n = len(x)
    loss = float(-np.log(probs[np.arange(n), y] + 1e-12).mean())
    d_logits = probs
    d_logits[np.arange(n), y] -= 1
    d_logits /= n
    d_h = (d_logits @ w2.T) * (1 - h * h)
    grads = [x.T @ d_h, d_h.sum(axis=0), h.T @ d_logits, d_logits.sum(axis=0)]
    return loss, [g.astype(np.float32) for g in grads]


def accuracy(params, x, y) -> float:
    return float((_forward(params, x)[1].argmax(axis=1) == y).mean())


def train(make_optimizer, steps: int = 200, seed: int = 0):
    """Full-batch training; returns (losses per step, test accuracy, params, seconds).

    BLAS runs on one thread: its spinning worker threads and the optimizer's OpenMP
    threads would otherwise fight over a 2-core machine (measured here: 7x slower).
    """
    from threadpoolctl import threadpool_limits

    x_train, y_train, x_test, y_test = load_digits_split(seed)
    params = init_params(seed)
    opt = make_optimizer(params)
    losses = []
    start = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(steps):
            loss, grads = loss_and_grads(params, x_train, y_train)
            losses.append(loss)
            opt.step(grads)
    seconds = time.perf_counter() - start
    return np.array(losses), accuracy(params, x_test, y_test), params, seconds


class _TorchAdam:
    """torch.optim.Adam over NumPy params (shared memory), with Adam's ``step(grads)``."""

    def __init__(self, params, lr):
        import torch

        self._tensors = [torch.from_numpy(p) for p in params]
        self._opt = torch.optim.Adam(self._tensors, lr=lr, fused=True)
        self._torch = torch

    def step(self, grads):
        for t, g in zip(self._tensors, grads):
            t.grad = self._torch.from_numpy(g)
        self._opt.step()


@dataclass
class DemoResult:
    losses: pd.DataFrame
    summary: pd.DataFrame
    plot: Path | None

    @property
    def ok(self) -> bool:
        """Every run learned (test accuracy >= 0.9) and final losses agree within LOSS_RTOL."""
        final = self.summary["final_loss"]
        spread = (final.max() - final.min()) / final.min()
        return bool((self.summary["test_accuracy"] >= 0.9).all() and spread <= LOSS_RTOL)


def run_demo(steps: int = 200, lr: float = 1e-2, seed: int = 0, out_stem=None,
             include_peers: bool = True, backends: list[str] | None = None) -> DemoResult:
    """Train once per available CPU backend (and torch's fused Adam if installed)."""
    names = backends or [r.name for r in list_backends() if r.available and r.device == "cpu"]
    makers = {name: (lambda params, n=name: Adam(params, backend=n, lr=lr)) for name in names}
    if include_peers:
        try:
            import torch  # noqa: F401
            makers["torch-fused"] = lambda params: _TorchAdam(params, lr)
        except ImportError:
            pass
    curves, rows = {}, []
    for name, make in makers.items():
        losses, acc, _, seconds = train(make, steps, seed)
        curves[name] = losses
        rows.append({"optimizer": name, "final_loss": losses[-1], "test_accuracy": acc,
                     "train_seconds": seconds})
    losses_df = pd.DataFrame(curves).rename_axis("step").reset_index()
    summary = pd.DataFrame(rows)
    reference = summary["final_loss"].iloc[0]
    summary["final_loss_rel_diff"] = (summary["final_loss"] - reference).abs() / reference
    plot = None
    if out_stem is not None:
        write_tables(summary, out_stem)
        write_tables(losses_df, Path(f"{out_stem}-losses"))
        plot = plot_losses(losses_df, Path(out_stem).with_suffix(".png"))
    return DemoResult(losses_df, summary, plot)


def plot_losses(losses: pd.DataFrame, path: Path,
                title: str = "Digits MLP: the same training on every backend") -> Path:
    """One loss curve per column of ``losses`` (log scale), saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "--", ":", "-."]
    for i, name in enumerate(c for c in losses.columns if c != "step"):
        ax.plot(losses["step"], losses[name], styles[i % 4], lw=2.5 - 0.4 * i, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("Adam step (full batch)")
    ax.set_ylabel("training cross-entropy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
