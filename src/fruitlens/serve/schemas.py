"""The API's answers as pydantic models, the OpenAPI document's schemas (a class's name is its
schema's name there). Requests are query parameters and forms, declared on the routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ErrorBody(BaseModel):
    ok: Literal[False] = False
    reason: str
    detail: str  # technical, in English
    message: str  # what it means, in the request's language (lang / Accept-Language)


class Attribution(BaseModel):
    text: str
    author: str
    dataset: str
    source: str
    license: str
    license_url: str
    changes: str


class Attribute(BaseModel):
    key: str  # the Fruits-360 dictionary's attribute (TYPE, GROWTH LOCATION, ...)
    attribute: str
    value: str
    code: int


class Fact(BaseModel):
    fact: str  # "eaten" | "stored"
    label: str  # in the answer's language
    value: str


class SpeciesInfo(BaseModel):
    name: str
    display_name: str
    family: str
    family_name: str
    has_information: bool
    metadata_class: str | None
    attributes: list[Attribute]
    facts: list[Fact]
    description: str | None
    description_lang: str | None
    note: str | None
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
    metadata_class: str | None
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


class Collection(BaseModel):
    name: str
    title: str
    dataset: str | None
    author: str | None
    source: str | None
    license: str
    license_url: str | None


class Similar(BaseModel):
    id: str
    label: str | None
    split: str | None
    species: str | None
    name: str | None
    similarity: float
    closeness: str
    closeness_text: str
    collection: Collection
    url: str


class Why(BaseModel):
    reason: str  # "not a fruit or vegetable" | "unlike the training images" | "low confidence" | "family"
    text: str
    next_step: str
    candidates: list[str]
    family: str | None


class PhotoAnswer(BaseModel):
    id: str
    predicted: str
    probability: float
    not_sure: bool
    level: str | None
    novelty: float


class Identified(BaseModel):
    ok: Literal[True] = True
    predicted: str
    probability: float
    not_sure: bool
    why_not_sure: str | None
    novelty: float
    level: str | None
    answer: str | None
    answer_name: str | None
    family: str | None
    family_name: str | None
    family_probability: float | None
    top5: list[TopItem]
    why: Why | None
    species: SpeciesInfo
    photos: list[PhotoAnswer]
    combined: str
    similar: list[Similar]
    search: str
    timing_ms: dict[str, float]
    lang: str
    attribution: Attribution | None
    attributions: list[Attribution]


class FeedbackAnswer(BaseModel):
    ok: Literal[True] = True
    stored: bool
    receipt: str | None
    confirmed: bool | None
    photos: int  # how many photos of the question were kept (0 without consent)
    keep_until: str | None
    delete_url: str | None
    message: str


class Deleted(BaseModel):
    ok: Literal[True] = True
    deleted: bool


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    model: str  # the loaded model's fingerprint: changes when a reload (SIGHUP) loads another
    model_loaded_at: str
    classes: int
    indexed_images: int
    search: str
    interpreters: int
    feedback: bool
    key_required: bool  # identify and feedback need a key (X-API-Key or Authorization: Bearer)
    languages: list[str]
