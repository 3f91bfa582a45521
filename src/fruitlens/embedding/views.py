"""Views of one photo: the whole photo, crops and mirror images, each embedded on its own.

Real photos (a shelf, a crate, a hand) rarely show the fruit alone and centred. Embedding several
views of each training photo gives a classifier more rows to learn from (as many datasets are
augmented), and averaging a photo's views' probabilities at predict time makes the answer less
dependent on framing: on GroceryStore's validation split, the 12 views of docs/benchmarks.md
("Real photos") took a logistic regression on the default embedding from 69% to 82% of the fine
classes.

A view set is named by its size: 1 (the whole photo), 2 (+ its centre crop), 4 (+ both mirror
images), 6 (the whole photo, the four corner crops and the centre crop), 12 (those six and their
mirror images). Each set's views are among the larger sets' (except 4's mirror of the whole photo
and 6), so a model trained on 12 views chooses on validation how many `predict` averages: on
GroceryStore the whole photo and its centre crop did as well as all 12, for a sixth of the cost.
Crops are squares of `crop` (default 0.7) of the photo's short side. View 0
is always the whole photo exactly as `decode` makes it, so a dataset's `embedding` column is the
same with or without views; the other views go to its `views` column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .. import FruitlensError
from .decode import decode_image, fit, open_rgb

WHOLE, CENTRE, CORNERS = "whole", "centre", ("top-left", "top-right", "bottom-left", "bottom-right")
_SETS = {
    1: (WHOLE,),
    2: (WHOLE, CENTRE),
    4: (WHOLE, CENTRE, WHOLE + "~", CENTRE + "~"),
    6: (WHOLE, *CORNERS, CENTRE),
    12: (WHOLE, *CORNERS, CENTRE, WHOLE + "~", *(c + "~" for c in CORNERS), CENTRE + "~"),
}
SIZES = tuple(_SETS)
DEFAULT_CROP = 0.7


@dataclass(frozen=True)
class Views:
    count: int = 1  # one of SIZES
    crop: float = DEFAULT_CROP  # a crop's side, as a share of the photo's short side

    def __post_init__(self):
        if self.count not in _SETS:
            raise FruitlensError(f"--views must be one of {', '.join(map(str, SIZES))}, got {self.count}")
        if not 0.2 <= self.crop <= 1.0:
            raise FruitlensError(f"--crop must be in [0.2, 1], got {self.crop}")

    @property
    def names(self) -> tuple[str, ...]:
        """The views in order; `~` marks a mirror image."""
        return _SETS[self.count]

    @property
    def params(self) -> dict:
        """What embeddings made with these views depend on (nothing for the whole photo alone, so
        datasets made before views existed keep matching)."""
        return {} if self.count == 1 else {"views": self.count, "crop": self.crop}

    @classmethod
    def of_params(cls, params: dict) -> Views:
        return cls(int(params.get("views") or 1), float(params.get("crop") or DEFAULT_CROP))

    def pixels(self, data: bytes, size: tuple[int, int], max_pixels: int, upscale: bool) -> list[np.ndarray]:
        """Every view of the photo as RGB uint8 pixels, the whole photo first (as `decode_image`
        gives it); the others cut from the photo at the resolution the crops need. Raises
        DecodeError as `decode_image` does."""
        whole = decode_image(data, size, max_pixels, upscale=upscale)
        if self.count == 1:
            return [whole]
        photo = _open(data, size, self.crop, max_pixels)
        w, h = photo.size
        side = max(1, round(self.crop * min(w, h)))
        boxes = {
            CENTRE: ((w - side) // 2, (h - side) // 2),
            "top-left": (0, 0),
            "top-right": (w - side, 0),
            "bottom-left": (0, h - side),
            "bottom-right": (w - side, h - side),
        }
        out, cut = [whole], {WHOLE: whole}
        for name in self.names[1:]:
            base = name.rstrip("~")
            if base not in cut:
                x, y = boxes[base]
                cut[base] = fit(photo.crop((x, y, x + side, y + side)), size, upscale)
            out.append(np.ascontiguousarray(cut[base][:, ::-1]) if name.endswith("~") else cut[base])
        return out


def _open(data: bytes, size: tuple[int, int], crop: float, max_pixels: int) -> Image.Image:
    """The photo, oriented and in RGB, at no less than the resolution its crops need."""
    return open_rgb(data, max_pixels, draft=(int(size[0] / crop) + 1, int(size[1] / crop) + 1))
