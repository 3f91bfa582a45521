"""The species' information: the Fruits-360 author's per-class metadata, decoded to words, and the
mapping from the model's class names to the metadata's.

The metadata folder (`--info`, local or s3://) is the dataset's `meta` branch: `dictionary.txt`
explains every attribute and its coded values (`SIZE[5 values]=SMALL (0), SMALL-MEDIUM (1), ...`),
and `Meta/<class>/info.txt` gives one class's codes (`SIZE[5]=2`), so SIZE is "MEDIUM". Values are
presented in the dictionary's own words.

Class names: the 2019 release (the sample, most trained models) says "Apple Braeburn", the
current metadata "Apple Braeburn 1". A class is matched exactly, then with case and spaces
normalised, then as "<name> 1", "<name> 2", ... (the first that exists), then through the few
renames listed in ALIASES. A class with no match has no information, and says so.

The metadata is CC BY-SA 4.0 (Mihai Oltean): ATTRIBUTION goes with every answer that shows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .. import FruitlensError
from ..storage.location import Location

ATTRIBUTION = {
    "text": "Species information from the Fruits-360 dataset by Mihai Oltean, licensed under CC BY-SA 4.0; "
            "attribute codes decoded to words through the dataset's dictionary.txt.",
    "author": "Mihai Oltean",
    "dataset": "Fruits-360",
    "source": "https://github.com/fruits-360",
    "license": "CC BY-SA 4.0",
    "license_url": "https://creativecommons.org/licenses/by-sa/4.0/",
    "changes": "attribute codes decoded to words",
}

# 2019 names that the current release renamed beyond a suffix or case (left: the model's class).
ALIASES = {"redcurrant": "Currant red 1"}

_DICT_LINE = re.compile(r"^\s*([A-Z][A-Z ]*?)\s*\[\s*(\d+)\s*values?\s*\]\s*=\s*(.*)$", re.IGNORECASE)
_VALUE = re.compile(r"([^,()]+?)\s*\(\s*(\d+)\s*\)")
_INFO_LINE = re.compile(r"^\s*([A-Z][A-Z ]*?)\s*\[\s*(\d+)\s*\]\s*=\s*(-?\d+)\s*$", re.IGNORECASE)


def normalise(name: str) -> str:
    return " ".join(name.split()).casefold()


def parse_dictionary(text: str) -> dict[str, dict[int, str]]:
    """`ATTR[N values]=WORD (0), WORD (1) or WORD (2)` lines -> {ATTR: {code: WORD}}."""
    out: dict[str, dict[int, str]] = {}
    for line in text.splitlines():
        m = _DICT_LINE.match(line)
        if not m:
            continue
        values = {}
        for word, code in _VALUE.findall(m.group(3)):
            word = re.sub(r"^\s*or\s+", "", word.strip(), flags=re.IGNORECASE).strip()
            if word:
                values[int(code)] = word
        out[" ".join(m.group(1).split())] = values
    return out


def parse_info(text: str, dictionary: dict[str, dict[int, str]]) -> list[dict]:
    """`ATTR[N]=code` lines -> [{"attribute", "value", "code"}] in the file's order, in words."""
    out = []
    for line in text.splitlines():
        m = _INFO_LINE.match(line)
        if not m:
            continue  # VERSION=..., blank lines
        attr, code = " ".join(m.group(1).split()), int(m.group(3))
        word = dictionary.get(attr, {}).get(code)
        out.append({"attribute": attr, "value": word if word is not None else f"unknown code {code}", "code": code})
    return out


@dataclass
class Species:
    name: str  # the model's class name
    metadata_class: str | None  # the folder under Meta/ it matched, or None
    attributes: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        if self.metadata_class is None:
            return {"name": self.name, "has_information": False, "metadata_class": None, "attributes": [],
                    "note": "the Fruits-360 metadata has no information on this class"}
        return {"name": self.name, "has_information": True, "metadata_class": self.metadata_class,
                "attributes": self.attributes, "note": None}


def match_class(name: str, available: list[str]) -> str | None:
    """The metadata class for a model class name: exact, normalised, "<name> N", then ALIASES."""
    if name in available:
        return name
    by_norm = {}
    for a in sorted(available):
        by_norm.setdefault(normalise(a), a)
    key = normalise(name)
    if key in by_norm:
        return by_norm[key]
    for n in range(1, 10):
        if f"{key} {n}" in by_norm:
            return by_norm[f"{key} {n}"]
    alias = ALIASES.get(key)
    if alias is not None:
        return by_norm.get(normalise(alias))
    return None


class Catalog:
    """Every class of the model with its information (or none)."""

    def __init__(self, classes: list[str], dictionary: dict[str, dict[int, str]], infos: dict[str, str]):
        self.dictionary = dictionary
        available = sorted(infos)
        self.species: dict[str, Species] = {}
        for c in classes:
            meta = match_class(c, available)
            attrs = parse_info(infos[meta], dictionary) if meta is not None else []
            self.species[c] = Species(c, meta, attrs)

    @property
    def missing(self) -> list[str]:
        return [s.name for s in self.species.values() if s.metadata_class is None]

    def get(self, name: str) -> Species | None:
        return self.species.get(name)

    @classmethod
    def load(cls, where: Location, classes: list[str]) -> "Catalog":
        """From the metadata folder (holding dictionary.txt and Meta/), local or on S3."""
        try:
            dictionary = parse_dictionary((where / "dictionary.txt").read_bytes().decode("utf-8", "replace"))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise FruitlensError(f"--info: no dictionary.txt in {where.uri} (the Fruits-360 metadata folder, "
                                 "with dictionary.txt and Meta/<class>/info.txt)") from None
        except OSError as exc:
            raise FruitlensError(f"--info: cannot read {where.uri}: {exc}") from None
        if not dictionary:
            raise FruitlensError(f"--info: {where.uri}/dictionary.txt lists no attributes")
        meta = where / "Meta"
        infos: dict[str, str] = {}
        try:
            found = meta.fs.find(meta.path)
        except (FileNotFoundError, NotADirectoryError):
            found = []
        for p in found:
            parts = p[len(meta.path):].strip("/").split("/")
            if len(parts) == 2 and parts[1] == "info.txt":
                infos[parts[0]] = meta.child(p).read_bytes().decode("utf-8", "replace")
        if not infos:
            raise FruitlensError(f"--info: no Meta/<class>/info.txt under {where.uri}")
        return cls(classes, dictionary, infos)
