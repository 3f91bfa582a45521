"""Species information without a server: the Fruits-360 dictionary and per-class metadata,
GroceryStore's descriptions, class names matched to both, French and English."""

from __future__ import annotations

import importlib
import sys

import pytest
from conftest import SAMPLE, needs_shared

from fruitlens import FruitlensError
from fruitlens.serve.species_info import SpeciesInformation, match_class, parse_dictionary, parse_info
from fruitlens.storage.location import Location

from .support import GROCERY, META


def test_dictionary_and_info_decoded_to_the_dictionarys_words():
    d = parse_dictionary(
        "// Version 1\nHARDNESS[3 values]=SOFT (0), MEDIUM (1) , HARD(2)\n"
        "MATURITY[3 values]=UNRIPE (0), RIPEN (1) or OVERRIPE (2)\n"
        "SIZE[5 values]=SMALL (0), SMALL-MEDIUM (1), MEDIUM (2), MEDIUM-HUGE (3), HUGE (4)"
    )
    assert d == {
        "HARDNESS": {0: "SOFT", 1: "MEDIUM", 2: "HARD"},
        "MATURITY": {0: "UNRIPE", 1: "RIPEN", 2: "OVERRIPE"},
        "SIZE": {0: "SMALL", 1: "SMALL-MEDIUM", 2: "MEDIUM", 3: "MEDIUM-HUGE", 4: "HUGE"},
    }
    info = parse_info("VERSION=2021.09.10.0\nSIZE[5]=2\nHARDNESS[3]=2\nMATURITY[3]=7\n", d)
    assert info == [
        {"attribute": "SIZE", "value": "MEDIUM", "code": 2},
        {"attribute": "HARDNESS", "value": "HARD", "code": 2},
        {"attribute": "MATURITY", "value": "unknown code 7", "code": 7},
    ]


def test_class_names_mapped_exact_then_normalised_then_numbered_then_aliases():
    available = [
        "Apple Braeburn 1",
        "apple golden 1",
        "Tomato 1",
        "Tomato 10",
        "Currant red 1",
        "Nut 2",
        "Nut  Forest 1",
    ]
    assert match_class("Tomato 1", available) == "Tomato 1"
    assert match_class("Apple Golden 1", available) == "apple golden 1"
    assert match_class("Apple  Braeburn", available) == "Apple Braeburn 1"
    assert match_class("Nut", available) == "Nut 2"
    assert match_class("Nut Forest", available) == "Nut  Forest 1"
    assert match_class("Redcurrant", available) == "Currant red 1"
    assert match_class("Durian", available) is None


def test_every_class_of_the_sample_has_metadata():
    needs_shared()
    classes = sorted(p.name for p in (SAMPLE / "Training").iterdir())
    information = SpeciesInformation.load([Location.of(str(META))], classes)
    assert information.missing == []
    size = {a["attribute"]: a["value"] for a in information.get("Apple Braeburn").attributes}["SIZE"]
    assert information.get("Apple Braeburn").metadata_class == "Apple Braeburn 1" and size == "MEDIUM"


def test_the_builtin_catalogues_species_find_information_in_both_sources_and_speak_french():
    needs_shared()
    from fruitlens.catalogue import Catalogue, Names

    catalogue = Catalogue.load("builtin")
    families = catalogue.families()
    species = sorted(families)
    information = SpeciesInformation.load(
        [Location.of(str(META)), Location.of(str(GROCERY))], species, [families[s] for s in species], catalogue
    )
    golden = information.get(
        "Apple Golden Delicious"
    )  # Fruits-360's "Apple Golden 1" and GroceryStore's "Golden-Delicious"
    assert golden.metadata_class.startswith("Apple Golden") and "Golden Delicious" in golden.description
    assert {s["dataset"] for s in golden.sources} == {"Fruits-360", "GroceryStore"}
    fr = golden.to_json(Names.builtin(), "fr")
    assert fr["display_name"] == "Pomme Golden" and fr["family_name"] == "Pomme"
    assert {"Pousse", "Type"} <= {a["attribute"] for a in fr["attributes"]} and fr["description_lang"] == "en"
    assert not {"Taille", "Acheté", "Transformé"} & {a["attribute"] for a in fr["attributes"]}
    assert fr["sources"][0]["text"].startswith("Informations sur les espèces")
    assert {a["value"] for a in fr["attributes"] if a["attribute"] == "Type"} == {"Fruit"}
    leek = information.get("Leek")  # GroceryStore only
    assert leek.description and not leek.attributes and leek.sources[0]["license"] == "MIT"
    assert len(information.missing) < len(species) / 4


def test_bad_info_folder_is_one_line(tmp_path):
    with pytest.raises(FruitlensError, match="neither the Fruits-360 metadata folder"):
        SpeciesInformation.load([Location.of(str(tmp_path))], ["Banana"])


def test_the_old_module_name_still_imports_with_a_warning_naming_the_release_that_removes_it():
    sys.modules.pop("fruitlens.serve.metadata", None)
    with pytest.warns(DeprecationWarning, match=r"species_info.*0\.3\.0"):
        old = importlib.import_module("fruitlens.serve.metadata")
    assert old.Catalog is SpeciesInformation
