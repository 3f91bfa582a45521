"""Backbones: the only place that knows about a particular network. The chain sees `Backbone`."""

from __future__ import annotations

from dataclasses import replace

from ... import FruitlensError
from .base import Backbone, BackboneSpec
from .efficientnet import (
    EFFICIENTNET_LITE2,
    EFFICIENTNET_LITE2_FP32,
    EFFICIENTNET_LITE2_FP32_POOLED,
    EFFICIENTNET_LITE2_POOLED,
    WholeGraphBackbone,
)
from .litert import (
    MOBILENET_V2,
    MOBILENET_V2_MULTISCALE,
    MOBILENET_V2_TF1,
    LiteRTBackbone,
)

SPECS: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        MOBILENET_V2_MULTISCALE,
        MOBILENET_V2,
        MOBILENET_V2_TF1,
        EFFICIENTNET_LITE2,
        EFFICIENTNET_LITE2_POOLED,
        EFFICIENTNET_LITE2_FP32,
        EFFICIENTNET_LITE2_FP32_POOLED,
    )
}
# The chain's default (featurize, run): the TF2 MobileNetV2's pooled output plus its earlier stages'
# averages, one pass: chosen on the validation split over the plain pooled output (docs/benchmarks.md,
# "The identification engine"); 3-5x faster than EfficientNet-Lite2 ("Two backbones: the trade").
DEFAULT_BACKBONE = MOBILENET_V2_MULTISCALE.name
# The product model's backbone: EfficientNet-Lite2, int8, all 2136 values. The one place to change
# it (to efficientnet_lite2_pooled, _fp32 or _fp32_pooled) once the GroceryStore val measurement
# decides; `--backbone lite2` names it.
PRODUCT_BACKBONE = EFFICIENTNET_LITE2.name
ALIASES = {"lite2": PRODUCT_BACKBONE}


def get_spec(name: str) -> BackboneSpec:
    """The spec of a backbone name (or alias: `lite2` is the product's EfficientNet-Lite2 choice).
    Datasets and models record the spec's own name, never the alias."""
    try:
        return SPECS[ALIASES.get(name, name)]
    except KeyError:
        raise FruitlensError(f"unknown backbone {name!r}; choose one of {', '.join([*SPECS, *ALIASES])}") from None


def at_size(spec: BackboneSpec, size) -> BackboneSpec:
    """The spec running at another input size: an int (square) or (width, height); None keeps the
    backbone's own. The MobileNetV2s and EfficientNet-Lite2 are convolutional up to their global
    pooling (spatial means), so the interpreter's input is resized and the embedding keeps its length."""
    if size is None:
        return spec
    width, height = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(width, height) < 32:
        raise FruitlensError(f"image size {width}x{height}: at least 32 pixels a side")
    return spec if (width, height) == tuple(spec.input_size) else replace(spec, input_size=(width, height))


def load(spec: BackboneSpec, model_path: str, threads: int, **options) -> Backbone:
    """`options`: the backbone's own (both LiteRT kinds: resize_in_graph=False for the network alone)."""
    return spec.factory(spec, model_path, threads, **options)


__all__ = [
    "ALIASES",
    "Backbone",
    "BackboneSpec",
    "DEFAULT_BACKBONE",
    "PRODUCT_BACKBONE",
    "SPECS",
    "at_size",
    "get_spec",
    "load",
    "LiteRTBackbone",
    "WholeGraphBackbone",
]
