import dataclasses

import pytest

from backends import AdamConfig


def test_defaults_are_the_papers():
    cfg = AdamConfig()
    assert (cfg.lr, cfg.beta1, cfg.beta2, cfg.eps) == (1e-3, 0.9, 0.999, 1e-8)
    assert (cfg.weight_decay, cfg.decoupled, cfg.amsgrad, cfg.maximize) == (0.0, False, False,
                                                                           False)


@pytest.mark.parametrize("field, value, match", [
    ("lr", -1.0, r"Invalid lr: -1.0 \(expected lr >= 0\)"),
    ("beta1", 1.0, r"Invalid beta1: 1.0 \(expected 0 <= beta1 < 1\)"),
    ("beta1", -0.1, r"Invalid beta1: -0.1"),
    ("beta2", 1.0, r"Invalid beta2: 1.0 \(expected 0 <= beta2 < 1\)"),
    ("eps", 0.0, r"Invalid eps: 0.0 \(expected eps > 0\)"),
    ("weight_decay", -0.01, r"Invalid weight_decay: -0.01"),
    ("lr", float("nan"), r"lr must be finite, got nan"),
    ("eps", float("inf"), r"eps must be finite"),
])
def test_bad_values_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        AdamConfig(**{field: value})


@pytest.mark.parametrize("field, value", [("lr", "0.1"), ("amsgrad", 1), ("beta1", True),
                                          ("maximize", "yes")])
def test_bad_types_name_the_field(field, value):
    with pytest.raises(TypeError, match=field):
        AdamConfig(**{field: value})


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        AdamConfig().lr = 0.1
