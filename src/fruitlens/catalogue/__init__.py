"""The catalogue: what the app names, and in which words.

A photo collection names its folders its own way (Fruits-360's "Apple Golden 2", GroceryStore's
"Golden-Delicious"); the app names a *species* ("Apple Golden Delicious") of a *family* ("Apple").
`catalogue.csv` (`label,species,family`) maps every folder name (label) a collection may use to
the species and its family, so one model learns one species from every collection that shows it;
`names.csv` (`name,en,fr`) gives every species and family its English and French name.

The product ships both (`builtin`: Fruits-360's 2019/2020 and current folder names, GroceryStore's
fruit and vegetable folders; its cartons are no species: they map to NOT_PRODUCE, a class the
model learns so that it can say "not a fruit or vegetable"). `train --catalogue
FILE` takes another; without one, every label is its own species and family (the model names the
folders). A model folder keeps the catalogue it was trained with (`catalogue.csv`).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from importlib import resources

from .. import FruitlensError
from ..storage.location import Location, storage_errors

BUILTIN = "builtin"  # --catalogue builtin: the catalogue shipped in the package
# The one "species" that is none: photos of things that are not fruit or vegetables (GroceryStore's
# milk, juice and yoghurt cartons in the builtin catalogue). A model learns it as a class, and an
# answer of it is always "not sure" ("not a fruit or vegetable").
NOT_PRODUCE = "(not produce)"
HEADER = ("label", "species", "family")
LANGUAGES = ("en", "fr")


def normalise(label: str) -> str:
    """The form labels are matched in: case, hyphens, underscores and runs of spaces do not count
    ("Golden-Delicious" = "golden delicious", "Zucchini dark 1" = "Zucchini Dark 1")."""
    return " ".join(re.sub(r"[-_]+", " ", label).casefold().split())


@dataclass(frozen=True)
class Catalogue:
    rows: tuple[tuple[str, str, str], ...]  # (label, species, family), as written
    source: str  # a path, "builtin", or "labels" (each label its own species)
    _by_label: dict = field(default=None, repr=False, compare=False, hash=False)

    def __post_init__(self):
        by_label: dict[str, tuple[str, str]] = {}
        family_of: dict[str, str] = {}
        for label, species, family in self.rows:
            key = normalise(label)
            if key in by_label and by_label[key] != (species, family):
                raise FruitlensError(
                    f"catalogue {self.source}: label {label!r} is given twice, as {by_label[key][0]!r} and {species!r}"
                )
            if family_of.setdefault(species, family) != family:
                raise FruitlensError(
                    f"catalogue {self.source}: species {species!r} is in two families, "
                    f"{family_of[species]!r} and {family!r}"
                )
            by_label[key] = (species, family)
        for _, species, family in self.rows:  # a folder named after a species is that species (feedback photos)
            by_label.setdefault(normalise(species), (species, family))
        object.__setattr__(self, "_by_label", by_label)

    # -- making one --------------------------------------------------------------------------------
    @classmethod
    def load(cls, where: str | None, labels=()) -> Catalogue:
        """`where`: a CSV file (local or s3://), `builtin`, or None: each of `labels` its own species."""
        if where is None:
            return cls.of_labels(labels)
        if where == BUILTIN:
            return cls.parse((resources.files(__package__) / "catalogue.csv").read_text("utf-8"), BUILTIN)

        place = Location.of(where)
        with storage_errors(place, "cannot read the catalogue"):
            if not place.exists():
                raise FruitlensError(
                    f"--catalogue: no file at {place.uri} (a CSV label,species,family, or `{BUILTIN}`)"
                )
            data = place.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise FruitlensError(f"--catalogue {place.uri}: not UTF-8 text (a CSV label,species,family)") from None
        return cls.parse(text, place.uri)

    @classmethod
    def parse(cls, text: str, source: str) -> Catalogue:
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None or tuple(h.strip().lower() for h in header) != HEADER:
            raise FruitlensError(
                f"catalogue {source}: the first line must be {','.join(HEADER)}, "
                f"got {','.join(header or []) or 'nothing'}"
            )
        rows = []
        for n, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            cells = [cell.strip() for cell in row]
            if len(cells) != 3 or not all(cells):
                raise FruitlensError(
                    f"catalogue {source}, line {n}: expected 3 non-empty fields label,species,family, got {row!r}"
                )
            rows.append(tuple(cells))
        if not rows:
            raise FruitlensError(f"catalogue {source}: no rows after the header")
        return cls(tuple(rows), source)

    @classmethod
    def of_model(cls, model, classes) -> Catalogue:
        """The catalogue a model folder (a Location) was trained with (`catalogue.csv`); a model
        saved before catalogues existed: each class its own species."""
        place = model / "catalogue.csv"
        try:
            text = place.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return cls.of_labels(classes)
        return cls.parse(text, place.uri)

    @classmethod
    def of_labels(cls, labels) -> Catalogue:
        """No catalogue: every label is its own species and family."""
        return cls(tuple((label, label, label) for label in sorted(set(labels))), "labels")

    # -- using one ---------------------------------------------------------------------------------
    def species_of(self, label: str | None) -> str | None:
        """The species a folder name stands for; None when the catalogue does not know it."""
        found = self._by_label.get(normalise(label)) if label else None
        return found[0] if found else None

    def family_of(self, species: str) -> str:
        for _, s, family in self.rows:
            if s == species:
                return family
        return species

    def families(self) -> dict[str, str]:
        """species -> family, for every species of the catalogue."""
        return {species: family for _, species, family in self.rows}

    def restricted_to(self, labels) -> Catalogue:
        """The rows of the labels given (what a model was trained on), in the catalogue's order."""
        keep = {normalise(label) for label in labels if label}
        return Catalogue(tuple(r for r in self.rows if normalise(r[0]) in keep), self.source)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(self.rows)
        return out.getvalue()


@dataclass(frozen=True)
class Names:
    """Every species' and family's name in each language (`names.csv`: name,en,fr)."""

    table: dict  # name -> {"en": ..., "fr": ...}

    @classmethod
    def builtin(cls) -> Names:
        text = (resources.files(__package__) / "names.csv").read_text("utf-8")
        table = {row["name"]: {lang: row[lang] for lang in LANGUAGES} for row in csv.DictReader(io.StringIO(text))}
        return cls(table)

    def name(self, name: str, lang: str = "en") -> str:
        """The name in `lang`; in English when that language lacks it; the catalogue's own word
        when the table does not know the name (a catalogue of the user's)."""
        entry = self.table.get(name) or {}
        return entry.get(lang) or entry.get("en") or name
