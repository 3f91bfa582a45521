"""The species' information and names: what the page and the API say about a species, in English
or French, and where it comes from.

Names: every species and family of the model in each language, from the catalogue's `names.csv`
(a name the table does not know is shown as the catalogue writes it).

Information (`--info FOLDER`, repeatable, local or s3://), found for a species through the labels
(folder names) the model's catalogue maps to it, in whichever source has them:
- the Fruits-360 author's per-class metadata (its `meta` branch: `dictionary.txt` explains every
  attribute and its coded values, `Meta/<class>/info.txt` gives one class's codes, so SIZE[5]=2 is
  "MEDIUM"), presented in the dictionary's words, or their French translation below; a class is
  matched exactly, then with case and spaces normalised, then as "<name> 1", "<name> 2", ...,
  then through the renames in ALIASES. CC BY-SA 4.0 (Mihai Oltean);
- GroceryStore's product descriptions (`classes.csv` and `iconic-images-and-descriptions/`: a
  shop's short text about each product, in English). MIT (Klasson, Zhang, Kjellström).
Every answer that shows information carries the attribution of its source.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

from .. import FruitlensError
from ..catalogue import NOT_PRODUCE, Catalogue, Names
from ..catalogue import normalise as normalise_label
from ..storage.location import Location
from .phrases import localised_attribution

FRUITS360 = {
    "text": "Species information from the Fruits-360 dataset by Mihai Oltean, licensed under CC BY-SA 4.0; "
    "attribute codes decoded to words through the dataset's dictionary.txt.",
    "author": "Mihai Oltean",
    "dataset": "Fruits-360",
    "source": "https://github.com/fruits-360",
    "license": "CC BY-SA 4.0",
    "license_url": "https://creativecommons.org/licenses/by-sa/4.0/",
    "changes": "attribute codes decoded to words (and translated to French on request)",
}
GROCERYSTORE = {
    "text": "Product descriptions from the GroceryStore dataset by Marcus Klasson, Cheng Zhang and Hedvig "
    "Kjellström (WACV 2019), MIT licence.",
    "author": "Marcus Klasson, Cheng Zhang, Hedvig Kjellström",
    "dataset": "GroceryStore",
    "source": "https://github.com/marcusklasson/GroceryStoreDataset",
    "license": "MIT",
    "license_url": "https://opensource.org/license/mit",
    "changes": "none",
}
ATTRIBUTION = FRUITS360  # the one the service started with (kept for clients of the first API)

# 2019 names that the current release renamed beyond a suffix or case (left: the model's class).
ALIASES = {"redcurrant": "Currant red 1"}

# The Fruits-360 dictionary's words in French (attributes, then each attribute's values).
ATTRIBUTES_FR = {
    "CLUSTERS": ("En grappes", {"NO": "Non", "YES": "Oui"}),
    "DEFECTS": ("Défauts", {"ALMOST NO DEFECTS": "Presque aucun", "WITH OBVIOUS DEFECTS": "Visibles"}),
    "FAT": ("Matières grasses", {"LOW": "Peu", "MEDIUM": "Moyennement", "HIGH": "Beaucoup"}),
    "FRUCTOSE": ("Fructose", {"LOW": "Peu", "MEDIUM": "Moyennement", "HIGH": "Beaucoup"}),
    "GROWTH LOCATION": (
        "Pousse",
        {"UNDERGROUND": "Sous terre", "GROUND LEVEL": "Au ras du sol", "ABOVE GROUND": "Au-dessus du sol"},
    ),
    "HARDNESS": ("Fermeté", {"SOFT": "Tendre", "MEDIUM": "Moyenne", "HARD": "Ferme"}),
    "MATURITY": ("Maturité", {"UNRIPE": "Pas mûr", "RIPEN": "Mûr", "OVERRIPE": "Trop mûr"}),
    "NUMBER OF SEEDS": ("Graines", {"NONE": "Aucune", "ONE": "Une", "FEW": "Quelques-unes", "MANY": "Beaucoup"}),
    "PROCESSED": ("Transformé", {"NO": "Non", "YES": "Oui"}),
    "PURCHASED": ("Acheté", {"NO": "Non", "YES": "Oui"}),
    "SIZE": (
        "Taille",
        {
            "SMALL": "Petite",
            "SMALL-MEDIUM": "Petite à moyenne",
            "MEDIUM": "Moyenne",
            "MEDIUM-HUGE": "Moyenne à très grande",
            "HUGE": "Très grande",
        },
    ),
    "SKIN HARDNESS": ("Peau", {"SOFT": "Tendre", "MEDIUM": "Moyennement dure", "HARD": "Dure"}),
    "SKIN ROUGHNESS": ("Aspect de la peau", {"SOFT": "Lisse", "MEDIUM": "Un peu rugueux", "ROUGH": "Rugueux"}),
    "TYPE": (
        "Type",
        {"FRUIT": "Fruit", "VEGETABLE": "Légume", "NUT": "Fruit à coque", "SEED": "Graine", "OTHER": "Autre"},
    ),
    "YEARLY TREE": ("Plante", {"ANNUALLY": "Annuelle", "MULTI-YEAR": "Vivace"}),
    "WATER": ("Eau", {"LOW": "Peu", "MEDIUM": "Moyennement", "HIGH": "Beaucoup"}),
}

# What a shopper wants of Fruits-360's attributes: what the species is and is like. The others
# describe the photographed specimen or the photo session (purchased, processed, its size, skin,
# hardness, maturity, defects) and are not shown.
SHOPPER_ATTRIBUTES = ("TYPE", "GROWTH LOCATION", "YEARLY TREE", "NUMBER OF SEEDS", "WATER", "FRUCTOSE", "FAT")

# How a species is eaten and kept, where GroceryStore's description says so: (what, the words that
# say it in the description, what is shown in each language). Read from the English text, shown in
# the page's language, with the description as the source.
FACTS = (
    (
        "eaten",
        {"en": "Eaten", "fr": "Se mange"},
        (
            (r"eaten raw|eat raw|raw food|good to eat raw|can be eaten raw", {"en": "raw", "fr": "cru"}),
            (r"eaten naturally|eating naturally|eat as it is|as it is\b", {"en": "as it is", "fr": "tel quel"}),
            (r"cook|boil|fry|stew|grill|oven|gratin|soup|\bwok\b|\bpots\b", {"en": "cooked", "fr": "cuit"}),
            (r"salad", {"en": "in salads", "fr": "en salade"}),
            (r"dessert|pastr|jam\b|marmalade|cookies", {"en": "in desserts and jams", "fr": "en dessert, confiture"}),
        ),
    ),
    (
        "stored",
        {"en": "Kept", "fr": "Se conserve"},
        (
            (
                r"never in a refrigerator|never in the fridge",
                {"en": "never in the fridge", "fr": "jamais au réfrigérateur"},
            ),
            (
                r"(?<!never in a )refrigerator|(?<!never in the )fridge",
                {"en": "in the fridge", "fr": "au réfrigérateur"},
            ),
            (r"kept cool|or cool\b|cool place", {"en": "somewhere cool", "fr": "au frais"}),
            (r"room temperature", {"en": "at room temperature", "fr": "à température ambiante"}),
        ),
    ),
)


def facts_of(description: str | None) -> list[tuple[str, list[dict]]]:
    """[(fact, [its values' words])] that the description says (the FACTS table)."""
    if not description:
        return []
    text = description.casefold()
    out = []
    for fact, _, rules in FACTS:
        found = [words for pattern, words in rules if re.search(pattern, text)]
        if found:
            out.append((fact, found))
    return out


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


def translated(attributes: list[dict], lang: str) -> list[dict]:
    """The attributes in `lang`, as a person reads them ("Growth location": "Above ground"; the
    dictionary's own upper-case words stay in `key`)."""
    out = []
    for a in attributes:
        if lang == "fr":
            name, values = ATTRIBUTES_FR.get(a["attribute"], (a["attribute"], {}))
            value = values.get(a["value"].upper(), a["value"])
        else:
            name, value = a["attribute"].capitalize(), a["value"].capitalize()
        out.append({**a, "key": a["attribute"], "attribute": name, "value": value})
    return out


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


# -- the sources ------------------------------------------------------------------------------------


@dataclass
class Fruits360Meta:
    dictionary: dict[str, dict[int, str]]
    infos: dict[str, str]  # Meta/<class> -> info.txt
    attribution: dict = field(default_factory=lambda: FRUITS360)

    def lookup(self, labels: list[str]) -> tuple[str, list[dict]] | None:
        """(the Meta class, its attributes) of the first label that has one."""
        available = sorted(self.infos)
        for label in labels:
            found = match_class(label, available)
            if found is not None:
                return found, parse_info(self.infos[found], self.dictionary)
        return None

    @classmethod
    def load(cls, where: Location) -> Fruits360Meta:
        dictionary = parse_dictionary((where / "dictionary.txt").read_bytes().decode("utf-8", "replace"))
        if not dictionary:
            raise FruitlensError(f"--info: {where.uri}/dictionary.txt lists no attributes")
        meta = where / "Meta"
        infos: dict[str, str] = {}
        try:
            found = meta.fs.find(meta.path)
        except (FileNotFoundError, NotADirectoryError):
            found = []
        for p in found:
            parts = p[len(meta.path) :].strip("/").split("/")
            if len(parts) == 2 and parts[1] == "info.txt":
                infos[parts[0]] = meta.child(p).read_bytes().decode("utf-8", "replace")
        if not infos:
            raise FruitlensError(f"--info: no Meta/<class>/info.txt under {where.uri}")
        return cls(dictionary, infos)


@dataclass
class GroceryStoreInfo:
    descriptions: dict[str, str]  # normalised class name (fine or coarse) -> description
    names: dict[str, str]  # normalised -> the dataset's class name
    attribution: dict = field(default_factory=lambda: GROCERYSTORE)

    def lookup(self, labels: list[str]) -> tuple[str, str] | None:
        for label in labels:
            key = normalise_label(label)
            if key in self.descriptions:
                return self.names[key], self.descriptions[key]
        return None

    @classmethod
    def load(cls, where: Location) -> GroceryStoreInfo:
        rows = list(csv.reader(io.StringIO((where / "classes.csv").read_bytes().decode("utf-8-sig", "replace"))))
        descriptions, names = {}, {}
        for row in rows[1:]:
            if len(row) < 6:
                continue
            fine, coarse, path = row[0].strip(), row[2].strip(), row[5].strip().lstrip("/")
            try:
                text = " ".join((where / path).read_bytes().decode("utf-8", "replace").split())
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                continue
            for name in (fine, coarse):
                descriptions.setdefault(normalise_label(name), text)
                names.setdefault(normalise_label(name), name)
        if not descriptions:
            raise FruitlensError(f"--info: {where.uri}/classes.csv names no product description that is there")
        return cls(descriptions, names)


def load_source(where: Location):
    """The information folder by what it holds: Fruits-360's metadata or GroceryStore's descriptions."""
    try:
        if (where / "dictionary.txt").exists():
            return Fruits360Meta.load(where)
        if (where / "classes.csv").exists():
            return GroceryStoreInfo.load(where)
    except OSError as exc:
        raise FruitlensError(f"--info: cannot read {where.uri}: {exc}") from None
    raise FruitlensError(
        f"--info: {where.uri} is neither the Fruits-360 metadata folder (dictionary.txt, "
        "Meta/<class>/info.txt) nor GroceryStore's (classes.csv, iconic-images-and-descriptions/)"
    )


# -- a species' information -------------------------------------------------------------------------


@dataclass
class Species:
    name: str  # the model's class (a species of the catalogue)
    family: str
    metadata_class: str | None = None  # the Fruits-360 Meta class it matched
    attributes: list[dict] = field(default_factory=list)
    description: str | None = None  # GroceryStore's, in English
    description_class: str | None = None
    sources: list[dict] = field(default_factory=list)  # the attributions of what is shown

    @property
    def has_information(self) -> bool:
        return bool(self.attributes or self.description)

    def to_json(self, names: Names, lang: str = "en") -> dict:
        """Its names and what a shopper wants to know, in `lang`: the species' kind and nature
        (Fruits-360's attributes of the species, not of the photographed specimen), how it is eaten
        and kept (read from GroceryStore's description, which stays in English: `description_lang`)."""
        note = None
        if not self.has_information:
            note = (
                "aucune des sources d'information ne décrit cette espèce"
                if lang == "fr"
                else "no information source describes this species"
            )
        labels = {fact: words for fact, words, _ in FACTS}
        facts = [
            {
                "fact": fact,
                "label": labels[fact].get(lang, labels[fact]["en"]),
                "value": ", ".join(w.get(lang, w["en"]) for w in found),
            }
            for fact, found in facts_of(self.description)
        ]
        return {
            "name": self.name,
            "display_name": names.name(self.name, lang),
            "family": self.family,
            "family_name": names.name(self.family, lang),
            "has_information": self.has_information,
            "metadata_class": self.metadata_class,
            "attributes": translated([a for a in self.attributes if a["attribute"] in SHOPPER_ATTRIBUTES], lang),
            "facts": facts,
            "description": self.description,
            "description_lang": "en" if self.description else None,
            "note": note,
            "sources": [localised_attribution(src, lang) for src in self.sources],
        }


class SpeciesInformation:
    """Every class of the model with its names and information (or none). The labels each species
    is found by come from `catalogue.Catalogue` (labels -> species and family)."""

    def __init__(
        self, classes: list[str], families: list[str], catalogue: Catalogue, sources: list, names: Names | None = None
    ):
        self.names = names or Names.builtin()
        self.species: dict[str, Species] = {}
        labels_of: dict[str, list[str]] = {}
        for label, species, _ in catalogue.rows:
            labels_of.setdefault(species, []).append(label)
        for c, family in zip(classes, families):
            labels = [c, *labels_of.get(c, [])]
            s = Species(c, family)
            for source in sources if c != NOT_PRODUCE else ():  # cartons: no species to describe
                found = source.lookup(labels)
                if found is None:
                    continue
                if isinstance(source, Fruits360Meta) and not s.attributes:
                    s.metadata_class, s.attributes = found
                    s.sources.append(source.attribution)
                elif isinstance(source, GroceryStoreInfo) and s.description is None:
                    s.description_class, s.description = found
                    s.sources.append(source.attribution)
            self.species[c] = s
        self.attributions = [src.attribution for src in sources]

    @property
    def missing(self) -> list[str]:
        return [s.name for s in self.species.values() if not s.has_information]

    def get(self, name: str) -> Species | None:
        return self.species.get(name)

    @classmethod
    def load(
        cls,
        places: list[Location],
        classes: list[str],
        families: list[str] | None = None,
        catalogue: Catalogue | None = None,
    ) -> SpeciesInformation:
        """From the information folders (local or on S3)."""
        sources = [load_source(where) for where in places]
        return cls(classes, families or list(classes), catalogue or Catalogue.of_labels(classes), sources)
