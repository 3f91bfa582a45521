"""`GET /species` and `GET /species/{name}`: the species the model knows, their names and
information, in English or French, with the attributions of where the information comes from."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Path

from ..deps import get_service, negotiated_language
from ..errors import ERRORS, NOT_FOUND
from ..phrases import localised_attribution
from ..schemas import SpeciesAnswer, SpeciesList
from ..service import Service
from ..species_info import FRUITS360, SpeciesInformation
from . import API

router = APIRouter(tags=["species"])
plain_language = negotiated_language()


def attributions_of(information: SpeciesInformation, lang: str = "en") -> list[dict]:
    """The attributions of the information sources the service has (else Fruits-360's), in `lang`."""
    return [localised_attribution(a, lang) for a in information.attributions or [FRUITS360]]


def species_json(information: SpeciesInformation, name: str, lang: str) -> dict:
    """One species' names and information in `lang` (the `SpeciesInfo` schema)."""
    return information.get(name).to_json(information.names, lang)


@router.get("/species", response_model=SpeciesList, responses={**ERRORS})
async def species_list(lang: str = Depends(plain_language), service: Service = Depends(get_service)):
    """Every species the model knows, its names, and whether there is information on it."""
    information = service.information
    attributions = attributions_of(information, lang)
    items = []
    for s in information.species.values():
        j = s.to_json(information.names, lang)
        items.append(
            {k: j[k] for k in ("name", "display_name", "family", "family_name", "has_information", "metadata_class")}
            | {"url": f"{API}/species/{quote(s.name, safe='')}"}
        )
    return {
        "count": len(items),
        "lang": lang,
        "species": items,
        "attribution": attributions[0],
        "attributions": attributions,
    }


@router.get("/species/{name}", response_model=SpeciesAnswer, responses={**NOT_FOUND, **ERRORS})
async def species(
    name: str = Path(..., description="a species' name, as in the species list"),
    lang: str = Depends(plain_language),
    service: Service = Depends(get_service),
):
    """One species' names and information."""
    information = service.information
    if information.get(name) is None:
        raise HTTPException(404, "no such species (see /api/v1/species)")
    attributions = attributions_of(information, lang)
    return {
        "species": species_json(information, name, lang),
        "lang": lang,
        "attribution": attributions[0],
        "attributions": attributions,
    }
