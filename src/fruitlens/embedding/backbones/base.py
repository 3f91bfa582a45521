"""The small interface every backbone implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..backbone_file import BackboneFile


class Backbone(Protocol):
    spec: BackboneSpec
    # True: `embed` takes any height x width and resizes to spec.input_size itself, so decoders
    # hand it small images at their own size (mapper, predict, serve look this up with getattr).
    resizes_in_graph: bool

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (n, height, width, 3) RGB -> float32 (n, embedding_dim); one size per batch."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    file: BackboneFile
    input_size: tuple[int, int]  # (width, height) the decoder resizes to
    embedding_dim: int
    factory: Callable[[BackboneSpec, str, int], Backbone]
    options: tuple[tuple[str, str], ...] = ()  # backbone-specific settings (e.g. the tensor to cut at)

    def option(self, key: str) -> str:
        return dict(self.options)[key]

    @property
    def options_dict(self) -> dict[str, str]:
        return dict(self.options)
