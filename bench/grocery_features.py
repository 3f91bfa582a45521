"""GroceryStore train/ and val/ features with every view, in one form for the choice benches:
EfficientNet-Lite2's (bench/lite2_embeddings.py's npz) or today's backbone's (a `fruitlens
featurize --views 12` dataset). Each photo: (12, dim) in `Views(12).names` order, its fine and
coarse class ids (the dataset's train.txt / val.txt), its label (the fine class's folder name, as
the product's labels are) and split."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fruitlens.embedding.views import Views

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
GROCERY = os.path.join(SHARED, "data", "grocerystore")
NAMES12 = Views(12).names


def view_index(count: int) -> list[int]:
    """Where `Views(count)`'s views sit among the 12."""
    return [NAMES12.index(n) for n in Views(count).names]


@dataclass
class Features:
    x: np.ndarray  # (photos, 12, dim) float32
    y: np.ndarray  # fine class id
    coarse: np.ndarray
    split: np.ndarray  # "train" | "val"
    label: np.ndarray  # the fine class's name (the folder the product takes the label from)

    def take(self, split: str) -> Features:
        keep = self.split == split
        return Features(self.x[keep], self.y[keep], self.coarse[keep], self.split[keep], self.label[keep])


def fine_names() -> dict[int, str]:
    out = {}
    with open(os.path.join(GROCERY, "classes.csv")) as f:
        next(f)
        for line in f:
            cells = line.strip().split(",")
            out[int(cells[1])] = cells[0]
    return out


def _split_lists() -> dict[str, tuple[int, int]]:
    out = {}
    for split in ("train", "val"):
        with open(os.path.join(GROCERY, f"{split}.txt")) as f:
            for line in f:
                if line.strip():
                    path, fine, coarse = (s.strip() for s in line.split(","))
                    out[path] = (int(fine), int(coarse))
    return out


def lite2(path: str, cols: slice = slice(None)) -> Features:
    with np.load(path) as d:
        names = fine_names()
        return Features(
            d["x"][:, :, cols].astype(np.float32),
            d["y"],
            d["coarse"],
            d["split"],
            np.array([names[int(i)] for i in d["y"]]),
        )


def product(folder: str) -> Features:
    """A `fruitlens featurize --views 12` dataset of the GroceryStore folder."""
    import pyarrow.dataset as ds

    table = ds.dataset(folder, format="parquet").to_table(columns=["path", "embedding", "views"]).to_pylist()
    ids, names = _split_lists(), fine_names()
    xs, y, coarse, split = [], [], [], []
    for row in table:
        path = os.path.realpath(row["path"].removeprefix("file://"))  # a folder of links to train/ and val/ too
        cut = max(path.rfind("/train/"), path.rfind("/val/"))
        rel = path[cut + 1 :]
        if cut < 0 or rel not in ids:
            continue
        xs.append(np.vstack([np.asarray(row["embedding"], np.float32)[None], np.asarray(row["views"], np.float32)]))
        y.append(ids[rel][0])
        coarse.append(ids[rel][1])
        split.append(rel.split("/")[0])
    y = np.array(y)
    return Features(np.stack(xs), y, np.array(coarse), np.array(split), np.array([names[int(i)] for i in y]))
