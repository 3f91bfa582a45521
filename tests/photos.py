"""Photos that are not fruit, for the tests and the benches (bench/search_bench.py imports it)."""

from __future__ import annotations

import io
from importlib import resources

import numpy as np
from PIL import Image


def non_fruit_photos() -> dict[str, bytes]:
    """Real photos that ship with scikit-image (a person, a cat, coffee, a rocket, ...) and synthetic ones."""
    folder = resources.files("skimage") / "data"
    out = {}
    for name in (
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
        "camera.png",
        "motorcycle_left.png",
        "hubble_deep_field.jpg",
        "brick.png",
        "grass.png",
        "text.png",
        "page.png",
        "coins.png",
    ):
        out[name] = (folder / name).read_bytes()
    rng = np.random.default_rng(0)

    def png(array):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        return buf.getvalue()

    out["noise"] = png(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    out["blank white"] = png(np.full((100, 100, 3), 255, np.uint8))
    out["blank black"] = png(np.zeros((100, 100, 3), np.uint8))
    out["grey gradient"] = png(np.tile(np.linspace(0, 255, 224).astype(np.uint8)[:, None, None], (1, 224, 3)))
    return out
