"""The bounds of harness.check.tolerances are tight: plausible Adam bugs fall outside them within
ten steps, while the correct kernel on the same problem stays inside."""
from dataclasses import replace

import pytest

from backends import AdamConfig, get_backend
from harness.check.agreement import OPTION_SETS, run_with_reference
from harness.core.problems import MIXED_SHAPES, random_problem
from harness.core.steppers import BackendStepper

#: bug -> (the option set it shows in, the config the buggy kernel really runs)
MUTANTS = {
    "correct": ("l2", lambda cfg: cfg),
    "lr 1% high": ("plain", lambda cfg: replace(cfg, lr=cfg.lr * 1.01)),
    "eps 10x": ("plain", lambda cfg: replace(cfg, eps=cfg.eps * 10)),
    "betas swapped": ("plain", lambda cfg: replace(cfg, beta1=cfg.beta2, beta2=cfg.beta1)),
    "L2 applied as decoupled": ("l2", lambda cfg: replace(cfg, decoupled=True)),
    "decoupled applied as L2": ("adamw", lambda cfg: replace(cfg, decoupled=False)),
    "maximize ignored": ("maximize", lambda cfg: replace(cfg, maximize=False)),
}


class MutantStepper(BackendStepper):
    """NumPy Adam that steps a different config (or step count) than the one checked."""

    def __init__(self, params, cfg, mutate, first_step=0):
        super().__init__(get_backend("numpy"), params, mutate(cfg))
        self.state.step = first_step


@pytest.mark.parametrize("bug", list(MUTANTS))
def test_a_wrong_kernel_falls_outside_the_bounds(bug, dtype):
    options, mutate = MUTANTS[bug]
    cfg = AdamConfig(**OPTION_SETS[options])
    problem = random_problem(MIXED_SHAPES, dtype, steps=10, seed=11)
    errors = run_with_reference(lambda p, c: MutantStepper(p, c, mutate), problem, cfg).errors
    assert errors.within_tolerance == (bug == "correct"), errors


def test_a_step_count_off_by_one_falls_outside_the_bounds(dtype):
    cfg = AdamConfig()
    problem = random_problem(MIXED_SHAPES, dtype, steps=10, seed=11)
    make = lambda p, c: MutantStepper(p, c, lambda cfg: cfg, first_step=1)
    assert not run_with_reference(make, problem, cfg).errors.within_tolerance
