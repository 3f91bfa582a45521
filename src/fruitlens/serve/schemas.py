"""The API's answers as pydantic models, the OpenAPI document's schemas (a class's name is its
schema's name there). Requests are query parameters and forms, declared on the routes."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel


class ErrorBody(BaseModel):
    ok: Literal[False] = False
    reason: str
    detail: str


class Attribution(BaseModel):
    text: str
    author: str
    dataset: str
    source: str
    license: str
    license_url: str
    changes: str


class Attribute(BaseModel):
    attribute: str
    value: str
    code: int


class SpeciesInfo(BaseModel):
    name: str
    display_name: str
    family: str
    family_name: str
    has_information: bool
    metadata_class: Optional[str]
    attributes: list[Attribute]
    description: Optional[str]
    note: Optional[str]
    sources: list[Attribution]


class SpeciesAnswer(BaseModel):
    species: SpeciesInfo
    lang: str
    attribution: Attribution
    attributions: list[Attribution]


class SpeciesItem(BaseModel):
    name: str
    display_name: str
    family: str
    family_name: str
    has_information: bool
    metadata_class: Optional[str]
    url: str


class SpeciesList(BaseModel):
    count: int
    lang: str
    species: list[SpeciesItem]
    attribution: Attribution
    attributions: list[Attribution]


class TopItem(BaseModel):
    label: str
    name: str
    probability: float


class Similar(BaseModel):
    id: str
    label: Optional[str]
    split: Optional[str]
    similarity: float
    url: str


class PhotoAnswer(BaseModel):
    id: str
    predicted: str
    probability: float
    not_sure: bool
    level: Optional[str]
    novelty: float


class Identified(BaseModel):
    ok: Literal[True] = True
    predicted: str
    probability: float
    not_sure: bool
    why_not_sure: Optional[str]
    novelty: float
    level: Optional[str]
    answer: Optional[str]
    answer_name: Optional[str]
    family: Optional[str]
    family_name: Optional[str]
    family_probability: Optional[float]
    top5: list[TopItem]
    species: SpeciesInfo
    photos: list[PhotoAnswer]
    combined: str
    similar: list[Similar]
    search: str
    timing_ms: dict[str, float]
    lang: str
    attribution: Attribution
    attributions: list[Attribution]


class FeedbackAnswer(BaseModel):
    ok: Literal[True] = True
    stored: bool
    receipt: Optional[str]
    confirmed: Optional[bool]
    keep_until: Optional[str]
    delete_url: Optional[str]
    message: str


class Deleted(BaseModel):
    ok: Literal[True] = True
    deleted: bool


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    classes: int
    indexed_images: int
    search: str
    interpreters: int
    feedback: bool
    languages: list[str]
