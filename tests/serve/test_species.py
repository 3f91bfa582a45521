"""`GET /api/v1/species`, `/api/v1/species/{name}` and `/api/v1/health` on the real service."""

from __future__ import annotations

from .support import CLASSES, NO_META


def test_a_class_without_metadata_says_so(client):
    r = client.get(f"/api/v1/species/{NO_META}")
    assert r.status_code == 200
    s = r.json()["species"]
    assert s["has_information"] is False and s["attributes"] == [] and "no information" in s["note"]
    assert r.json()["attribution"]["license"] == "CC BY-SA 4.0"


def test_species_list_one_species_health_and_schema(client):
    r = client.get("/api/v1/species").json()
    assert r["count"] == 6 and {s["name"] for s in r["species"]} == set(CLASSES)
    by_name = {s["name"]: s for s in r["species"]}
    assert by_name["Redcurrant"]["metadata_class"] == "Currant red 1" and not by_name[NO_META]["has_information"]
    one = client.get(by_name["Tomato 1"]["url"]).json()["species"]
    assert one["metadata_class"] == "Tomato 1" and one["attributes"]
    missing = client.get("/api/v1/species/Durian")
    assert missing.status_code == 404 and missing.json() == {
        "ok": False,
        "reason": "not found",
        "detail": "no such species (see /api/v1/species)",
        "message": "Not found.",
    }
    h = client.get("/api/v1/health").json()
    assert h["status"] == "ok" and h["classes"] == 6 and h["indexed_images"] == 120
    schema = client.get("/api/v1/openapi.json").json()
    assert {
        "/api/v1/identify",
        "/api/v1/species",
        "/api/v1/species/{name}",
        "/api/v1/images/{image_id}",
        "/api/v1/health",
    } <= set(schema["paths"])
