"""``adam-bench demo``: an MLP on scikit-learn's digits trained with every CPU backend
(``digits``), and with int8 state beside float32 state (``digits_int8``)."""
from .digits import (LOSS_RTOL, DemoResult, accuracy, init_params, load_digits_split, loss_and_grads, plot_losses, run_demo, train)

__all__ = ["DemoResult", "load_digits_split", "init_params", "loss_and_grads", "accuracy", "train", "run_demo", "plot_losses", "LOSS_RTOL"]
