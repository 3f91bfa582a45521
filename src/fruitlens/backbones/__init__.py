"""Backbones: the only place that knows about a particular network. The chain sees `Backbone`."""

from __future__ import annotations

from .base import Backbone, BackboneSpec
from .litert import LiteRTBackbone, MOBILENET_V2, MOBILENET_V2_MULTISCALE, MOBILENET_V2_TF1

SPECS: dict[str, BackboneSpec] = {
    spec.name: spec for spec in (MOBILENET_V2_MULTISCALE, MOBILENET_V2, MOBILENET_V2_TF1)
}


def get_spec(name: str) -> BackboneSpec:
    from .. import FruitlensError

    try:
        return SPECS[name]
    except KeyError:
        raise FruitlensError(f"unknown backbone {name!r}; choose one of {', '.join(SPECS)}") from None


def load(spec: BackboneSpec, model_path: str, threads: int) -> Backbone:
    return spec.factory(spec, model_path, threads)


__all__ = ["Backbone", "BackboneSpec", "SPECS", "get_spec", "load", "LiteRTBackbone"]
