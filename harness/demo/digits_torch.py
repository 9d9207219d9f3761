"""A real torch training loop: the digits MLP as a torch model, trained by autograd with
``backends.torch.Adam`` and with ``torch.optim.Adam``.

The model is harness.demo's (64 -> 64 tanh -> 10, float32, the same initial weights);
only the optimizer differs between the runs, so their loss curves must coincide up to
float32 rounding (``demo.LOSS_RTOL``). The loop is the one a PyTorch user writes:
``zero_grad()`` (new gradient tensors every step), ``loss.backward()``, ``step()``.

With training formats (``adam-bench demo --torch --format bf16-sr,...``) the params are
torch tensors of the format's dtype, the forward pass float32 from their values and the
gradients autograd's in the params' dtype; ours steps them with the format's options,
torch.optim.Adam steps the same low-precision params in its own arithmetic, and both are
set beside torch.optim.Adam in float32 (``run_torch_format_demo``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.results_io import write_tables
from . import DemoResult, accuracy, init_params, load_digits_split, plot_losses

__all__ = ["OPTIMIZERS", "train_torch", "run_torch_demo", "run_torch_format_demo"]

#: Row label -> how to make the optimizer over a model's parameters at ``lr``.
OPTIMIZERS = {
    "numba (torch.optim)": lambda params, lr: _ours(params, lr, "numba"),
    "numpy (torch.optim)": lambda params, lr: _ours(params, lr, "numpy"),
    "torch.optim.Adam": lambda params, lr: _torch().optim.Adam(params, lr=lr),
}


def _torch():
    import torch

    return torch


def _ours(params, lr, backend, **options):
    from backends.torch import Adam

    return Adam(params, lr=lr, backend=backend, **options)


def train_torch(make_optimizer, steps: int = 200, lr: float = 1e-2, seed: int = 0,
                dtype=None):
    """Full-batch training of the torch MLP with params of ``dtype`` (a torch dtype; None:
    float32), the forward pass in float32; returns (losses, test accuracy, seconds).

    torch runs on one thread here: its OpenMP workers and the optimizer's would otherwise
    fight over a 2-core machine.
    """
    torch = _torch()
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    weights = [torch.nn.Parameter(torch.from_numpy(w.copy()).to(dtype or torch.float32))
               for w in init_params(seed)]
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    opt = make_optimizer(weights, lr)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        for _ in range(steps):
            w1, b1, w2, b2 = (w.float() for w in weights)
            loss = torch.nn.functional.cross_entropy(torch.tanh(x @ w1 + b1) @ w2 + b2, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    trained = [w.detach().float().numpy() for w in weights]
    return np.array(losses), accuracy(trained, x_test, y_test), seconds


def run_torch_demo(steps: int = 200, lr: float = 1e-2, seed: int = 0, out_stem=None,
                   optimizers: list[str] | None = None) -> DemoResult:
    """Train once per optimizer (default: all of OPTIMIZERS); tables and plot under
    ``out_stem`` as ``adam-bench demo`` writes them."""
    runs = {name: (OPTIMIZERS[name], None) for name in optimizers or list(OPTIMIZERS)}
    return _run(runs, steps, lr, seed, out_stem,
                "Digits MLP in torch: our Adam and torch.optim.Adam")


def run_torch_format_demo(formats: list[str], steps: int = 200, lr: float = 1e-2,
                          seed: int = 0, out_stem=None) -> DemoResult:
    """Per format of ``harness.core.formats``: ours (numba) with the format's options and
    torch.optim.Adam on params of the format's dtype; torch.optim.Adam in float32 last,
    the reference of ``final_loss_rel_diff``."""
    from ..core.formats import FORMATS

    torch = _torch()
    runs = {}
    for name in formats:
        fmt = FORMATS[name]
        dtype = getattr(torch, fmt.dtype.name)  # float32, bfloat16, float16: torch's names
        runs[f"numba (torch.optim) [{name}]"] = (
            lambda params, lr, fmt=fmt: _ours(params, lr, "numba", **fmt.options), dtype)
        runs[f"torch.optim.Adam [{fmt.dtype.name}]"] = (
            OPTIMIZERS["torch.optim.Adam"], dtype)
    runs["torch.optim.Adam [fp32]"] = (OPTIMIZERS["torch.optim.Adam"], torch.float32)
    return _run(runs, steps, lr, seed, out_stem,
                "Digits MLP in torch, training formats: our Adam and torch.optim.Adam")


def _run(runs: dict, steps, lr, seed, out_stem, title) -> DemoResult:
    """Train each of ``runs`` ({label: (make_optimizer, params' torch dtype)}); the
    summary's last row is the reference of final_loss_rel_diff."""
    curves, rows = {}, []
    for name, (make, dtype) in runs.items():
        losses, acc, seconds = train_torch(make, steps, lr, seed, dtype)
        curves[name] = losses
        rows.append({"optimizer": name, "final_loss": losses[-1], "test_accuracy": acc,
                     "train_seconds": seconds})
    losses_df = pd.DataFrame(curves).rename_axis("step").reset_index()
    summary = pd.DataFrame(rows)
    reference = summary["final_loss"].iloc[-1]
    summary["final_loss_rel_diff"] = (summary["final_loss"] - reference).abs() / reference
    plot = None
    if out_stem is not None:
        write_tables(summary, out_stem)
        write_tables(losses_df, Path(f"{out_stem}-losses"))
        plot = plot_losses(losses_df, Path(out_stem).with_suffix(".png"), title=title)
    return DemoResult(losses_df, summary, plot)
