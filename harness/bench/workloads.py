"""Workloads: flat tensor sizes, and the parameter shapes of well-known models.

The shape tables are written from the published architectures (no downloads):
GPT-2 small (Radford et al. 2019; 148 tensors, 124,439,808 parameters), BERT-base
(Devlin et al. 2019; 199 tensors, 109,482,240) and ResNet-50 (He et al. 2016, torchvision
layout; 161 tensors, 25,557,032; batch-norm running statistics are buffers, not parameters).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Workload", "flat_workload", "model_workload", "MODELS", "parse_sizes"]


@dataclass(frozen=True)
class Workload:
    """A list of tensor shapes under a name ("flat" for a single tensor). With
    ``flat_buffer`` the tensors are views of one buffer (``Backend.flatten``), as a
    framework with flat parameter storage would hand them over."""

    name: str
    shapes: tuple[tuple[int, ...], ...]
    flat_buffer: bool = False

    @property
    def elements(self) -> int:
        return int(sum(np.prod(s, dtype=np.int64) for s in self.shapes))

    @property
    def tensors(self) -> int:
        return len(self.shapes)


def _gpt2_small():
    d, vocab, ctx = 768, 50257, 1024
    layer = [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,),
             (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return [(vocab, d), (ctx, d)] + layer * 12 + [(d,), (d,)]


def _bert_base():
    d, vocab, ctx = 768, 30522, 512
    attention = [(d, d), (d,)] * 4 + [(d,), (d,)]
    layer = attention + [(4 * d, d), (4 * d,), (d, 4 * d), (d,), (d,), (d,)]
    return [(vocab, d), (ctx, d), (2, d), (d,), (d,)] + layer * 12 + [(d, d), (d,)]


def _resnet50():
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for block in range(blocks):
            shapes += [(width, inplanes, 1, 1), (width,), (width,),
                       (width, width, 3, 3), (width,), (width,),
                       (4 * width, width, 1, 1), (4 * width,), (4 * width,)]
            if block == 0:
                shapes += [(4 * width, inplanes, 1, 1), (4 * width,), (4 * width,)]
            inplanes = 4 * width
    return shapes + [(1000, 2048), (1000,)]


MODELS = {"gpt2-small": _gpt2_small, "bert-base": _bert_base, "resnet50": _resnet50}


def model_workload(name: str, scale: float | None = None, elements: int | None = None,
                   flat_buffer: bool = False) -> Workload:
    """A model's parameter list, every tensor shrunk by ``scale`` (or to ``elements`` in
    all), each keeping at least one element; shrunk tensors are 1-D (Adam is elementwise)."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(MODELS)}")
    shapes = [tuple(s) for s in MODELS[name]()]
    if elements is not None:
        scale = elements / Workload(name, tuple(shapes)).elements
    suffix = "+flat-buffer" if flat_buffer else ""
    if scale is None or scale == 1:
        return Workload(name + suffix, tuple(shapes), flat_buffer)
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    sizes = [max(1, round(int(np.prod(s)) * scale)) for s in shapes]
    return Workload(f"{name}@{scale:.3g}{suffix}", tuple((n,) for n in sizes), flat_buffer)


def flat_workload(elements: int) -> Workload:
    """One contiguous tensor of ``elements`` elements."""
    return Workload("flat", ((int(elements),),))


def parse_sizes(text: str) -> list[int]:
    """Sizes from a CLI string: "2^10..2^24:2" (exponents 10 to 24 in steps of 2),
    "4096,65536" or "2^12,2^20". Every size is at least 1 and at most 2^62; anything
    else raises ValueError saying what is expected."""
    text = text.replace(" ", "")
    if ".." in text:
        lo, rest = text.split("..", 1)
        hi, _, step = rest.partition(":")
        first, last = _exponent(lo), _exponent(hi)
        stride = _integer(step or "1", "a range's step")
        if stride < 1 or first > last:
            raise ValueError(f"a size range needs 2^LO..2^HI[:STEP] with LO <= HI and "
                             f"STEP >= 1, got {text!r}")
        return [2**e for e in range(first, last + 1, stride)]
    tokens = text.split(",")
    if not text or any(not t for t in tokens):
        raise ValueError(f"expected sizes like 4096,2^20 or 2^10..2^24:2, got {text!r}")
    sizes = [2 ** _exponent(t) if "^" in t else _integer(t, "a size") for t in tokens]
    if any(not 1 <= n <= 2**62 for n in sizes):
        raise ValueError(f"sizes must be in 1..2^62, got {text!r}")
    return sizes


def _integer(token: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {token!r}") from None


def _exponent(token: str) -> int:
    if not token.startswith("2^"):
        raise ValueError(f"size range bounds must look like 2^N, got {token!r}")
    n = _integer(token[2:], "an exponent")
    if not 0 <= n <= 62:
        raise ValueError(f"exponents must be in 0..62, got {token!r}")
    return n
