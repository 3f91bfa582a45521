"""The OpenAPI document: its operations as the routers declare them, and the running service
conforming to it (property-based, schemathesis)."""

from __future__ import annotations

from types import SimpleNamespace

from fruitlens.config import ServeConfig
from fruitlens.serve.app import create_app

from .support import photo_of

# (method, path, operationId, tags, response codes, parameters), in the document's order: FastAPI derives the
# operationId from the route function's name and path, so renaming a route function changes the document.
OPERATIONS = [
    (
        "post",
        "/api/v1/identify",
        "identify_api_v1_identify_post",
        ["identify"],
        ["200", "400", "401", "413", "415", "422", "429", "503"],
        ["k", "lang"],
    ),
    ("get", "/api/v1/species", "species_list_api_v1_species_get", ["species"], ["200", "400", "422"], ["lang"]),
    (
        "get",
        "/api/v1/species/{name}",
        "species_api_v1_species__name__get",
        ["species"],
        ["200", "400", "404", "422"],
        ["name", "lang"],
    ),
    (
        "get",
        "/api/v1/images/{image_id}",
        "image_api_v1_images__image_id__get",
        ["images"],
        ["200", "400", "404", "422"],
        ["image_id"],
    ),
    (
        "post",
        "/api/v1/feedback",
        "feedback_api_v1_feedback_post",
        ["feedback"],
        ["200", "400", "401", "404", "413", "415", "422", "429", "503"],
        [],
    ),
    (
        "delete",
        "/api/v1/feedback/{receipt}",
        "delete_feedback_api_v1_feedback__receipt__delete",
        ["feedback"],
        ["200", "400", "404", "422"],
        ["receipt"],
    ),
    ("get", "/api/v1/health", "health_api_v1_health_get", ["service"], ["200"], []),
]
SCHEMAS = [
    "Attribute",
    "Attribution",
    "Body_feedback_api_v1_feedback_post",
    "Body_identify_api_v1_identify_post",
    "Collection",
    "Deleted",
    "ErrorBody",
    "Fact",
    "FeedbackAnswer",
    "Health",
    "Identified",
    "PhotoAnswer",
    "Similar",
    "SpeciesAnswer",
    "SpeciesInfo",
    "SpeciesItem",
    "SpeciesList",
    "TopItem",
    "Why",
]


def test_the_documented_operations_are_the_routers_in_order():
    """No model needed: building the app reads only the service's configuration."""
    doc = create_app(SimpleNamespace(cfg=ServeConfig(model="m", index="i", neighbours=3))).openapi()
    got = [
        (
            method,
            path,
            op["operationId"],
            op["tags"],
            sorted(op["responses"]),
            [p["name"] for p in op.get("parameters", [])],
        )
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    ]
    assert got == OPERATIONS
    assert sorted(doc["components"]["schemas"]) == SCHEMAS and doc["info"]["title"] == "fruitlens"
    identify = doc["paths"]["/api/v1/identify"]["post"]
    assert identify["summary"] == "Identify" and identify["description"].startswith("Identify the fruit in 1 to 5")
    k = next(p for p in identify["parameters"] if p["name"] == "k")
    assert k["schema"]["default"] == 3  # the service's neighbours
    assert list(identify["requestBody"]["content"]) == ["multipart/form-data"]


def test_api_conforms_to_its_openapi_schema(server, built):
    """schemathesis draws requests from the service's own schema (positive, and negative where a
    parameter can be made invalid), a bounded number each; every answer must be declared and match."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(server.url + "/api/v1/openapi.json")
    seen: dict[str, set] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        name = f"{op.method.upper()} {op.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(mode))
            @settings(
                max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
            )
            def run(case):
                seen.setdefault(name, set()).add(case.call_and_validate(checks=checks, timeout=60).status_code)  # noqa: B023 - run() is called in this iteration

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to make invalid (no parameters, any string)
    # ... and the success answers, from real values
    jpeg = photo_of("Kiwi").read_bytes()
    ident = (
        schema["/api/v1/identify"]["POST"]
        .Case(body={"photo": [jpeg, jpeg]}, media_type="multipart/form-data", query={"k": 3, "lang": "fr"})
        .call_and_validate(checks=checks)
    )
    assert ident.status_code == 200 and len(ident.json()["similar"]) == 3
    image = ident.json()["similar"][0]["id"]
    assert (
        schema["/api/v1/images/{image_id}"]["GET"]
        .Case(path_parameters={"image_id": image})
        .call_and_validate(checks=checks)
        .status_code
        == 200
    )
    assert (
        schema["/api/v1/species/{name}"]["GET"]
        .Case(path_parameters={"name": "Apple Braeburn"})
        .call_and_validate(checks=checks)
        .status_code
        == 200
    )
    kept = (
        schema["/api/v1/feedback"]["POST"]
        .Case(
            body={"said": "Kiwi", "consent": True, "photo_id": ident.json()["photos"][0]["id"]},
            media_type="multipart/form-data",
        )
        .call_and_validate(checks=checks)
    )
    assert kept.status_code == 200 and kept.json()["stored"]
    assert (
        schema["/api/v1/feedback/{receipt}"]["DELETE"]
        .Case(path_parameters={"receipt": kept.json()["receipt"]})
        .call_and_validate(checks=checks)
        .status_code
        == 200
    )
    assert set(seen) == {
        "POST /api/v1/identify",
        "GET /api/v1/species",
        "GET /api/v1/species/{name}",
        "GET /api/v1/images/{image_id}",
        "GET /api/v1/health",
        "POST /api/v1/feedback",
        "DELETE /api/v1/feedback/{receipt}",
    }
    assert server.proc.poll() is None
