"""Backbones: the only place that knows about a particular network. The chain sees `Backbone`."""

from __future__ import annotations

from dataclasses import replace

from ... import FruitlensError
from .base import Backbone, BackboneSpec
from .litert import (
    MOBILENET_V2,
    MOBILENET_V2_MULTISCALE,
    MOBILENET_V2_TF1,
    LiteRTBackbone,
)

SPECS: dict[str, BackboneSpec] = {spec.name: spec for spec in (MOBILENET_V2_MULTISCALE, MOBILENET_V2, MOBILENET_V2_TF1)}
# The TF2 MobileNetV2's pooled output plus its earlier stages' averages, one pass: chosen on the
# validation split over the plain pooled output (docs/benchmarks.md, "The identification engine").
DEFAULT_BACKBONE = MOBILENET_V2_MULTISCALE.name


def get_spec(name: str) -> BackboneSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise FruitlensError(f"unknown backbone {name!r}; choose one of {', '.join(SPECS)}") from None


def at_size(spec: BackboneSpec, size) -> BackboneSpec:
    """The spec running at another input size: an int (square) or (width, height); None keeps the
    backbone's own. The MobileNetV2s are convolutional up to their global pooling, so the
    interpreter's input is resized and the embedding keeps its length."""
    if size is None:
        return spec
    width, height = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(width, height) < 32:
        raise FruitlensError(f"image size {width}x{height}: at least 32 pixels a side")
    return spec if (width, height) == tuple(spec.input_size) else replace(spec, input_size=(width, height))


def load(spec: BackboneSpec, model_path: str, threads: int, **options) -> Backbone:
    """`options`: the backbone's own (LiteRT: resize_in_graph=False for the network alone)."""
    return spec.factory(spec, model_path, threads, **options)


__all__ = ["Backbone", "BackboneSpec", "SPECS", "at_size", "get_spec", "load", "LiteRTBackbone"]
