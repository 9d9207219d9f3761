"""torch.optim.Adam as a peer: the same problems, the same tolerances, every option."""
import numpy as np
import pytest

from backends import AdamConfig
from harness.agreement import OPTION_SETS, run_with_reference
from harness.edge_cases import EDGE_CASES, run_edge_case
from harness.peers import PEER_IMPLEMENTATIONS, TorchStepper, peer_labels, torch_unavailable_reason
from harness.problems import MIXED_SHAPES, random_problem

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[peers]')")


@pytest.mark.parametrize("implementation", PEER_IMPLEMENTATIONS)
@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_torch_agrees_with_the_reference(implementation, options, dtype):
    cfg = AdamConfig(**OPTION_SETS[options])
    problem = random_problem(MIXED_SHAPES, dtype, steps=50, seed=9)
    errors = run_with_reference(lambda p, c: TorchStepper(implementation, p, c), problem,
                                cfg).errors
    assert errors.within_tolerance, errors


def test_known_difference_inf_gradient_makes_torch_first_moment_nan():
    """torch updates m with lerp (m + w*(g - m)): an inf gradient followed by any finite one
    gives inf - inf = NaN, where beta1*m + (1-beta1)*g keeps inf. Parameters are NaN in both
    (inf/inf), so training is equally dead; README documents the difference."""
    case = next(c for c in EDGE_CASES if c.name == "nan-inf-grad")
    passed, why, trajectory = run_edge_case(case, lambda p, c: TorchStepper("fused", p, c),
                                            np.float32)
    assert not passed and "exp_avg" in why
    assert case.check(case.build(np.dtype(np.float32)), trajectory.params,
                      trajectory.moments, case.cfg) == ""


def test_labels_when_installed():
    assert torch_unavailable_reason() is None
    assert peer_labels() == ["torch-forloop", "torch-foreach", "torch-fused"]
