"""The collections the similar photos come from: each `--index` folder is one collection (a
`fruitlens run`/`featurize` OUTPUT), named after its dataset when it is one the product knows
(GroceryStore's shop photos, Fruits-360's turntable frames), with the licence its photos are under.

What a collection is comes from where its photos were read (`report.json`'s input, else the
indexed paths' common folder): a folder with GroceryStore's `classes.csv` and
`iconic-images-and-descriptions/`, or one with Fruits-360's `Training/`/`Test/`; its licence is its
`LICENSE` file's first words when it has one (the Fruits-360 sample's is MIT, the current releases
CC BY-SA 4.0), else the dataset's published one, else "licence not stated".

`Collections` searches every collection's index and merges the answers by similarity, so a shop
photo's neighbours come from whichever collection holds the closest photos.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..storage.location import Location
from .entries import Entry, Neighbour

# The datasets the product knows: how to recognise their folder, what to call them, their licence.
KNOWN = {
    "grocerystore": {
        "dataset": "GroceryStore",
        "kind": {"en": "shop photos", "fr": "photos en magasin"},
        "author": "Marcus Klasson, Cheng Zhang, Hedvig Kjellström",
        "source": "https://github.com/marcusklasson/GroceryStoreDataset",
        "license": "MIT",
        "license_url": "https://opensource.org/license/mit",
    },
    "fruits-360": {
        "dataset": "Fruits-360",
        "kind": {"en": "one fruit on white", "fr": "un fruit sur fond blanc"},
        "author": "Mihai Oltean",
        "source": "https://github.com/fruits-360",
        "license": "CC BY-SA 4.0",
        "license_url": "https://creativecommons.org/licenses/by-sa/4.0/",
    },
}
LICENCES = (  # a LICENSE file's first line -> (name, url)
    ("mit license", "MIT", "https://opensource.org/license/mit"),
    ("attribution-sharealike 4.0", "CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    ("apache license", "Apache-2.0", "https://www.apache.org/licenses/LICENSE-2.0"),
    ("attribution 4.0", "CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
)
NOT_STATED = {"en": "licence not stated", "fr": "licence non précisée"}


@dataclass(frozen=True)
class Collection:
    name: str  # the index folder's name (what the operator called it)
    dataset: str | None  # a known dataset's name, else None
    kind: dict | None  # {"en": ..., "fr": ...}: what its photos are
    author: str | None
    source: str | None
    license: str | None
    license_url: str | None

    def to_json(self, lang: str) -> dict:
        title = self.dataset or self.name
        kind = (self.kind or {}).get(lang)
        return {
            "name": self.name,
            "title": f"{title} ({kind})" if kind else title,
            "dataset": self.dataset,
            "author": self.author,
            "source": self.source,
            "license": self.license or NOT_STATED.get(lang, NOT_STATED["en"]),
            "license_url": self.license_url,
        }


def _first_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    return line.strip().casefold()
    except OSError:
        pass
    return ""


def _root_of(where: Location, sample_path: str | None) -> str | None:
    """The local folder the collection's photos were read from: the input `report.json` names when
    an indexed photo is under it, else the nearest of an indexed photo's folders (4 levels up at
    most: split, group, class, photo) that holds a LICENSE or a classes.csv."""
    found = None
    try:
        report = json.loads((where / "report.json").read_bytes())
        found = (report.get("parameters") or {}).get("featurize", {}).get("input")
    except (OSError, ValueError, AttributeError):
        pass
    path = os.path.abspath(sample_path.removeprefix("file://")) if sample_path else None
    if isinstance(found, str) and os.path.isdir(found.removeprefix("file://")):
        root = os.path.abspath(found.removeprefix("file://"))
        if path is None or path.startswith(root + os.sep):
            return root
    if path is None:
        return None
    folder = os.path.dirname(path)
    for _ in range(4):
        if any(os.path.exists(os.path.join(folder, f)) for f in ("LICENSE", "classes.csv")):
            return folder
        folder = os.path.dirname(folder)
    return None


def describe(where: Location, sample_path: str | None = None) -> Collection:
    """What the collection at `where` (an --index folder) is, from the folder its photos came from."""
    name = os.path.basename(where.uri.rstrip("/")) or where.uri
    root = _root_of(where, sample_path) if where.is_local else None
    known = None
    if root is not None:
        if os.path.exists(os.path.join(root, "classes.csv")) and os.path.isdir(
            os.path.join(root, "iconic-images-and-descriptions")
        ):
            known = KNOWN["grocerystore"]
        elif any(os.path.isdir(os.path.join(root, d)) for d in ("Training", "Test")) or "fruits-360" in root.lower():
            known = KNOWN["fruits-360"]
    licence, url = (known or {}).get("license"), (known or {}).get("license_url")
    if root is not None:
        first = _first_line(os.path.join(root, "LICENSE"))
        for start, lic, lic_url in LICENCES:
            if first.startswith(start):
                licence, url = lic, lic_url
                break
    known = known or {}
    return Collection(
        name, known.get("dataset"), known.get("kind"), known.get("author"), known.get("source"), licence, url
    )


def first_path(index) -> str | None:
    """An indexed photo's path (where the collection was read from), or None for an empty index."""
    if not len(index):
        return None
    return index.entries[0].path if hasattr(index, "entries") else index.entry_at(0).path


class Collections:
    """Several collections' indexes searched as one: each index's k best, merged by similarity.
    Images keep their ids (the sha256 of their path: distinct across collections)."""

    def __init__(self, indexes: list, collections: list[Collection]):
        self.indexes, self.collections = indexes, collections

    def __len__(self) -> int:
        return sum(len(i) for i in self.indexes)

    @property
    def kind(self) -> str:
        kinds = sorted({i.kind for i in self.indexes})
        return kinds[0] if len(kinds) == 1 else ", ".join(kinds)

    @property
    def dim(self) -> int:
        return self.indexes[0].dim if self.indexes else 0

    def search(self, inputs, k: int = 8) -> list[tuple[Neighbour, Collection, bool]]:
        """The k nearest over every collection: (neighbour, its collection, whether its similarity
        was measured in a reduced projection, which reads higher: `phrases.closeness`)."""
        found = [
            (n, c, getattr(index, "basis", None) is not None)
            for index, c in zip(self.indexes, self.collections)
            for n in index.search(inputs, k)
        ]
        found.sort(key=lambda nc: -nc[0].similarity)
        return found[:k]

    def entry(self, id_: str) -> Entry | None:
        for index in self.indexes:
            e = index.entry(id_)
            if e is not None:
                return e
        return None

    def read_image(self, entry: Entry) -> tuple[bytes, str]:
        for index in self.indexes:
            if index.entry(entry.id) is not None:
                return index.read_image(entry)
        raise FileNotFoundError(entry.id)
