"""`POST /api/v1/feedback` and `DELETE /api/v1/feedback/{receipt}`: corrections kept only with
consent, without metadata, deleted by receipt or after the retention period."""

from __future__ import annotations

import io
import json
from pathlib import Path

from conftest import needs_shared
from PIL import Image

from fruitlens.storage.location import Location

from .support import jpeg_with_gps, photo_of, post_photo


def test_feedback_is_kept_only_with_consent_without_metadata_and_can_be_deleted(client, built):
    store = built / "feedback"
    photo = jpeg_with_gps()
    assert Image.open(io.BytesIO(photo)).getexif().get_ifd(0x8825)  # the upload has a GPS position
    no = client.post(
        "/api/v1/feedback", data={"said": "Kiwi", "consent": "false"}, files={"photo": ("p.jpg", photo, "image/jpeg")}
    )
    assert no.status_code == 200 and no.json()["stored"] is False and no.json()["receipt"] is None
    assert not list(store.rglob("*.jpg"))  # without consent nothing is stored
    yes = client.post(
        "/api/v1/feedback",
        data={"said": "Kiwi", "consent": "true", "answered": "Banana"},
        files={"photo": ("p.jpg", photo, "image/jpeg")},
    ).json()
    assert yes["stored"] and yes["confirmed"] is True and yes["delete_url"] == f"/api/v1/feedback/{yes['receipt']}"
    kept = store / "train" / "Kiwi" / f"{yes['receipt']}.jpg"  # the layout featurize reads: label Kiwi, split train
    assert kept.is_file()
    clean = Image.open(kept)
    assert not clean.getexif() and "comment" not in clean.info and "icc_profile" not in clean.info
    assert b"PhoneMaker" not in kept.read_bytes() and b"secret note" not in kept.read_bytes()
    receipt = json.loads((store / "receipts" / f"{yes['receipt']}.json").read_text())
    assert receipt["said"] == "Kiwi" and receipt["answered"] == "Banana" and receipt["keep_until"] == yes["keep_until"]
    # free text, and a photo named by the id identify gave it
    ident = post_photo(client, photo_of("Lemon").read_bytes()).json()
    quince = client.post(
        "/api/v1/feedback", data={"said": "a quince!", "consent": "yes", "photo_id": ident["photos"][0]["id"]}
    ).json()
    assert quince["stored"] and quince["confirmed"] is False
    assert (store / "unconfirmed" / "a quince" / f"{quince['receipt']}.jpg").is_file()
    # deletion by the receipt, once
    assert client.delete(yes["delete_url"]).json() == {"ok": True, "deleted": True}
    assert not kept.exists() and not (store / "receipts" / f"{yes['receipt']}.json").exists()
    assert client.delete(yes["delete_url"]).status_code == 404
    # hostile fields
    cases = [
        (dict(data={"said": "x" * 201, "consent": "true"}, files={"photo": ("p.jpg", photo, "image/jpeg")}), 422),
        (dict(data={"said": "\x00\x01", "consent": "true"}, files={"photo": ("p.jpg", photo, "image/jpeg")}), 422),
        (dict(data={"said": "Kiwi", "consent": "true", "photo_id": "../../etc/passwd"}), 422),
        (dict(data={"said": "Kiwi", "consent": "true", "photo_id": "0" * 32}), 404),
        (dict(data={"said": "Kiwi", "consent": "true"}), 422),
        (
            dict(
                data={"said": "Kiwi", "consent": "true"}, files={"photo": ("p.jpg", b"GIF89a-not really", "image/gif")}
            ),
            422,
        ),
        (dict(data={"said": "Kiwi", "consent": "maybe"}, files={"photo": ("p.jpg", photo, "image/jpeg")}), 422),
        (
            dict(data={"said": "../../../tmp/x", "consent": "true"}, files={"photo": ("p.jpg", photo, "image/jpeg")}),
            200,
        ),
    ]
    for kwargs, status in cases:
        r = client.post("/api/v1/feedback", **kwargs)
        assert r.status_code == status, (kwargs.get("data"), r.status_code, r.text)
    assert not list((built.parent).glob("tmp/x*")) and not Path("/tmp/x").exists()
    assert {p.parent.name for p in (store / "unconfirmed").iterdir()} <= {"unconfirmed"}  # names stay inside
    for bad in ("0" * 31, "../../etc/passwd", "g" * 32, "0" * 32):
        assert client.delete(f"/api/v1/feedback/{bad}").status_code == 404


def test_feedback_past_its_retention_period_is_deleted(tmp_path):
    from datetime import datetime, timedelta, timezone

    from fruitlens.serve.feedback import FeedbackStore

    needs_shared()  # photo_of reads the sample
    store = FeedbackStore(Location.of(str(tmp_path)), retention_days=30, species=["Kiwi"])
    old = store.store(photo_of("Kiwi").read_bytes(), "Kiwi", None)
    assert store.expire(datetime.now(timezone.utc) + timedelta(days=29)) == 0
    assert store.expire(datetime.now(timezone.utc) + timedelta(days=31)) == 1
    assert not list(tmp_path.rglob("*.jpg")) and not list(tmp_path.rglob("*.json"))
    assert old.keep_until.startswith((datetime.now(timezone.utc) + timedelta(days=30)).date().isoformat())
