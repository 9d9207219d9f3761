import pytest

from harness.bench.workloads import MODELS, model_workload, parse_sizes


@pytest.mark.parametrize("name, tensors, elements", [
    ("gpt2-small", 148, 124_439_808),   # Radford et al. 2019 / the released checkpoint
    ("bert-base", 199, 109_482_240),    # Devlin et al. 2019, bert-base-uncased
    ("resnet50", 161, 25_557_032),      # He et al. 2016, torchvision's count
])
def test_shape_tables_match_the_published_counts(name, tensors, elements):
    workload = model_workload(name)
    assert (workload.tensors, workload.elements) == (tensors, elements)


def test_scaling_keeps_every_tensor():
    for name in MODELS:
        full = model_workload(name)
        small = model_workload(name, elements=2**20)
        assert small.tensors == full.tensors
        assert abs(small.elements - 2**20) / 2**20 < 0.01
        assert all(s[0] >= 1 for s in small.shapes)


def test_parse_sizes():
    assert parse_sizes("2^10..2^16:2") == [1024, 4096, 16384, 65536]
    assert parse_sizes("100,2^4") == [100, 16]
    with pytest.raises(ValueError, match="2\\^N"):
        parse_sizes("10..2^4")


def test_unknown_model():
    with pytest.raises(ValueError, match="Unknown model 'vgg'; known models: gpt2-small"):
        model_workload("vgg")
