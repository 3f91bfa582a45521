"""`POST /api/v1/feedback` and `DELETE /api/v1/feedback/{receipt}`: corrections kept only with
consent, without metadata, deleted by receipt or after the retention period."""

from __future__ import annotations

import io
import json
from pathlib import Path

from conftest import needs_shared
from PIL import Image

from fruitlens.serve.feedback import RECEIPT, FeedbackStore
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
    kept = store / "train" / "Kiwi" / f"{yes['receipt']}-0.jpg"  # the layout featurize reads: label Kiwi, split train
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
    assert (store / "unconfirmed" / quince["receipt"] / "0.jpg").is_file()  # an id, not the person's words
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
    assert all(RECEIPT.match(p.name) for p in (store / "unconfirmed").iterdir())  # ids only: no words in paths
    for bad in ("0" * 31, "../../etc/passwd", "g" * 32, "0" * 32):
        assert client.delete(f"/api/v1/feedback/{bad}").status_code == 404


def test_feedback_past_its_retention_period_is_deleted(tmp_path):
    from datetime import datetime, timedelta, timezone

    needs_shared()  # photo_of reads the sample
    store = FeedbackStore(Location.of(str(tmp_path)), retention_days=30, species=["Kiwi"])
    old = store.store([photo_of("Kiwi").read_bytes()], "Kiwi", None)
    assert store.expire(datetime.now(timezone.utc) + timedelta(days=29)) == 0
    assert store.expire(datetime.now(timezone.utc) + timedelta(days=31)) == 1
    assert not list(tmp_path.rglob("*.jpg")) and not list(tmp_path.rglob("*.json"))
    assert old.keep_until.startswith((datetime.now(timezone.utc) + timedelta(days=30)).date().isoformat())


def _everything(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def test_feedback_keeps_every_photo_of_the_question_under_one_receipt_and_deletion_leaves_nothing(client, built):
    store = built / "feedback"
    before = set(_everything(store))
    photos = [photo_of("Kiwi", i).read_bytes() for i in range(3)]
    ident = client.post(
        "/api/v1/identify", files=[("photo", (f"p{i}.jpg", d, "image/jpeg")) for i, d in enumerate(photos[:2])]
    ).json()
    ids = [p["id"] for p in ident["photos"]]
    # two photos by their ids and a third sent again: one question, one receipt
    kept = client.post(
        "/api/v1/feedback",
        data={"said": "Kiwi", "consent": "true", "photo_id": ids},
        files=[("photo", ("p2.jpg", photos[2], "image/jpeg"))],
    ).json()
    assert kept["stored"] and kept["photos"] == 3
    files = sorted((store / "train" / "Kiwi").glob(f"{kept['receipt']}-*.jpg"))
    assert len(files) == 3 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    receipt = store / "receipts" / f"{kept['receipt']}.json"
    assert receipt.stat().st_mode & 0o777 == 0o600 and len(json.loads(receipt.read_text())["photos"]) == 3
    # free words: a folder named by the receipt, the words in the receipt only
    words = "Grand-mère's secret quince"
    free = client.post("/api/v1/feedback", data={"said": words, "consent": "true", "photo_id": ids}).json()
    assert free["photos"] == 2 and free["confirmed"] is False
    paths = [str(p.relative_to(store)) for p in _everything(store)]
    assert not any("quince" in p.lower() or "secret" in p.lower() for p in paths)
    assert json.loads((store / "receipts" / f"{free['receipt']}.json").read_text())["said"] == words
    assert (store / "unconfirmed" / free["receipt"]).stat().st_mode & 0o777 == 0o700
    # one deletion each: every photo, the receipt, and no folder left behind
    for answer in (kept, free):
        assert client.delete(answer["delete_url"]).json() == {"ok": True, "deleted": True}
    assert set(_everything(store)) == before - {p for p in before if not p.exists()}
    assert not any(p.is_dir() and not any(p.iterdir()) for p in _everything(store))  # no empty folder
    assert not list(store.rglob(f"*{kept['receipt']}*")) and not list(store.rglob(f"*{free['receipt']}*"))
    # too many photos for one question: refused, in words
    many = client.post("/api/v1/feedback", data={"said": "Kiwi", "consent": "true", "photo_id": ids * 3})
    assert many.status_code == 422 and "1 to 5 photos" in many.json()["detail"]


def test_a_corrupt_receipt_never_blocks_deletion_and_a_receipt_never_deletes_outside(client, built, tmp_path):
    store = built / "feedback"
    photo = photo_of("Banana").read_bytes()

    def give(said="Banana"):
        return client.post(
            "/api/v1/feedback",
            data={"said": said, "consent": "true"},
            files=[("photo", ("a.jpg", photo, "image/jpeg")), ("photo", ("b.jpg", photo, "image/jpeg"))],
        ).json()

    # a receipt cut short, or not JSON at all: DELETE still removes every photo (found by name), no 500
    for said, mangle in (("Banana", lambda b: b[: len(b) // 2]), ("a pawpaw", lambda b: b"\x00\xff not json")):
        answer = give(said)
        receipt = store / "receipts" / f"{answer['receipt']}.json"
        receipt.write_bytes(mangle(receipt.read_bytes()))
        gone = client.delete(answer["delete_url"])
        assert gone.status_code == 200 and gone.json()["deleted"] is True
        assert not list(store.rglob(f"*{answer['receipt']}*"))
    # a receipt that names a file outside the store (whoever can write the store): that file stays
    victim = built / "victim.txt"
    victim.write_text("keep me")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"keep me too")
    answer = give()
    receipt = store / "receipts" / f"{answer['receipt']}.json"
    forged = json.loads(receipt.read_text())
    forged["photos"] = ["../victim.txt", str(outside), "train/../../victim.txt", *forged["photos"]]
    receipt.write_text(json.dumps(forged))
    assert client.delete(answer["delete_url"]).status_code == 200
    assert victim.read_text() == "keep me" and outside.read_bytes() == b"keep me too"
    assert not list(store.rglob(f"*{answer['receipt']}*"))  # its own photos are still deleted


def test_retention_follows_the_current_setting_for_every_kept_photo(tmp_path):
    from datetime import datetime, timedelta, timezone

    needs_shared()
    kiwi = photo_of("Kiwi").read_bytes()
    long = FeedbackStore(Location.of(str(tmp_path)), retention_days=365, species=["Kiwi"])
    kept = [long.store([kiwi, kiwi], "Kiwi", None), long.store([kiwi], "a feijoa", None)]
    assert all(
        r.keep_until.startswith((datetime.now(timezone.utc) + timedelta(days=365)).date().isoformat()) for r in kept
    )
    # the service restarted with 30 days: what was kept under 365 goes after 30 days (at start, then hourly)
    short = FeedbackStore(Location.of(str(tmp_path)), retention_days=30, species=["Kiwi"])
    assert short.expire(datetime.now(timezone.utc) + timedelta(days=29)) == 0
    assert len(list(tmp_path.rglob("*.jpg"))) == 3
    # a receipt cut short still expires (by the file's date), and a photo whose receipt is gone too
    cut = tmp_path / "receipts" / f"{kept[0].id}.json"
    cut.write_bytes(cut.read_bytes()[:20])
    (tmp_path / "receipts" / f"{kept[1].id}.json").unlink()
    assert short.expire(datetime.now(timezone.utc) + timedelta(days=31)) == 2
    assert _everything(tmp_path) == []  # every photo, receipt and folder: nothing left
    # raising the setting never keeps a photo longer than its person was told
    again = short.store([kiwi], "Kiwi", None)
    longer = FeedbackStore(Location.of(str(tmp_path)), retention_days=3650, species=["Kiwi"])
    assert longer.expire(datetime.now(timezone.utc) + timedelta(days=31)) == 1 and again.id not in str(
        _everything(tmp_path)
    )


def test_feedback_on_s3_is_private_and_deleted_whole(s3_server):
    import boto3

    needs_shared()
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="feedback-acl")
    store = FeedbackStore(Location.of("s3://feedback-acl/fb"), retention_days=30, species=["Kiwi"])
    receipt = store.store([photo_of("Kiwi").read_bytes()] * 2, "Kiwi", None)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="feedback-acl")["Contents"]]
    assert len(keys) == 3  # two photos and the receipt
    for key in keys:
        grants = s3.get_object_acl(Bucket="feedback-acl", Key=key)["Grants"]
        assert [g["Permission"] for g in grants] == ["FULL_CONTROL"] and "URI" not in grants[0]["Grantee"]
    assert store.delete(receipt.id)
    assert s3.list_objects_v2(Bucket="feedback-acl").get("KeyCount") == 0


def test_photos_kept_under_a_persons_words_by_an_earlier_version_are_moved_to_an_id(tmp_path):
    needs_shared()
    rid = "0123456789abcdef0123456789abcdef"
    old = tmp_path / "unconfirmed" / "my grandmother s quince" / f"{rid}.jpg"
    old.parent.mkdir(parents=True)
    old.write_bytes(photo_of("Kiwi").read_bytes())
    (tmp_path / "receipts").mkdir()
    receipt = {"id": rid, "stored_at": "2026-12-01T00:00:00+00:00", "keep_until": "2027-12-01T00:00:00+00:00"}
    receipt.update(photo=str(old.relative_to(tmp_path)), said="my grandmother's quince", answered=None, confirmed=False)
    (tmp_path / "receipts" / f"{rid}.json").write_text(json.dumps(receipt))
    store = FeedbackStore(Location.of(str(tmp_path)), retention_days=365, species=["Kiwi"])
    assert store.expire() == 0  # what runs at start and hourly
    paths = [str(p.relative_to(tmp_path)) for p in _everything(tmp_path)]
    assert not any("quince" in p or "grandmother" in p for p in paths), paths
    assert (tmp_path / "unconfirmed" / rid / "0.jpg").is_file()
    assert json.loads((tmp_path / "receipts" / f"{rid}.json").read_text())["said"] == "my grandmother's quince"
    assert store.delete(rid) and _everything(tmp_path) == []
