"""Users' corrections that grow the collection, kept only with consent.

`POST /api/v1/feedback` with the person's explicit consent stores the photo under `--feedback
LOCATION` (a local folder or s3://) in the layout `featurize` reads, so the next incremental `run`
and `train` learn from it:

    LOCATION/train/<species>/<receipt>.jpg        the species is one of the model's catalogue
    LOCATION/unconfirmed/<words>/<receipt>.jpg    free text: kept apart, not trained on until a
                                                  person files it under a species
    LOCATION/receipts/<receipt>.json              what was answered and said, when, until when

The photo is decoded and written again as a new JPEG from its pixels only: EXIF (GPS position,
camera, time), XMP, ICC profiles and comments are gone (the orientation is applied first, so the
photo looks as it did). The receipt id is random (128 bits) and is the only way to the photo:
`DELETE /api/v1/feedback/{receipt}` deletes the photo and its receipt. Photos and receipts older
than `--feedback-retention-days` are deleted by the service (at start, then hourly). Without consent
nothing is stored, not even in a log.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import threading
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from PIL import Image

from .. import FruitlensError
from ..config import ServeConfig
from ..embedding.decode import open_rgb
from ..storage.location import Location, storage_errors

RECEIPT = re.compile(r"\A[0-9a-f]{32}\Z")  # \Z: no trailing newline ($ takes one)
RECEIPTS = "receipts"


def clean_jpeg(data: bytes, max_side: int = 2048, max_pixels: int = ServeConfig.max_pixels) -> bytes:
    """The photo's pixels alone as a new JPEG: oriented as it was shown, at most `max_side` pixels
    a side, with no metadata of any kind. Raises DecodeError for bytes that are no photo we take."""
    img = open_rgb(data, max_pixels)
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    clean = Image.frombytes("RGB", img.size, img.tobytes())  # pixels only: no info, no exif, no icc
    out = io.BytesIO()
    clean.save(out, format="JPEG", quality=90, optimize=True)
    return out.getvalue()


def folder_name(text: str) -> str:
    """A safe folder name for free text: letters, digits, spaces and hyphens, at most 60 characters."""
    text = unicodedata.normalize("NFKC", text)
    cleaned = re.sub(r"[^\w\- ]+", " ", text, flags=re.UNICODE)
    cleaned = " ".join(cleaned.replace("_", " ").split())[:60].strip()
    return cleaned or "unnamed"


@dataclass
class Receipt:
    id: str
    stored_at: str
    keep_until: str
    photo: str  # relative to LOCATION
    said: str  # what the person says it is
    answered: str | None  # what the app had answered
    confirmed: bool  # `said` is a species of the model's catalogue


class FeedbackStore:
    def __init__(self, where: Location, retention_days: int, species: list[str]):
        if retention_days < 1:
            raise FruitlensError("--feedback-retention-days must be at least 1")
        self.where, self.retention = where, timedelta(days=retention_days)
        self.species = {s.casefold(): s for s in species}
        self._lock = threading.Lock()
        with storage_errors(where, "cannot write --feedback"):
            probe = where / RECEIPTS / ".write-test"
            probe.write_bytes(b"")
            probe.rm()

    def store(self, photo: bytes, said: str, answered: str | None, max_pixels: int = ServeConfig.max_pixels) -> Receipt:
        """Clean and store one photo; its receipt. Raises DecodeError for bytes that are no photo we take."""
        clean = clean_jpeg(photo, max_pixels=max_pixels)
        rid = secrets.token_hex(16)
        species = self.species.get(" ".join(said.split()).casefold())
        relative = f"train/{species}/{rid}.jpg" if species else f"unconfirmed/{folder_name(said)}/{rid}.jpg"
        now = datetime.now(timezone.utc)
        receipt = Receipt(
            rid,
            now.isoformat(timespec="seconds"),
            (now + self.retention).isoformat(timespec="seconds"),
            relative,
            said[:200],
            (answered or None) and answered[:200],
            species is not None,
        )
        with storage_errors(self.where, "cannot write --feedback"):
            (self.where / relative).write_bytes(clean)
            (self.where / RECEIPTS / f"{rid}.json").write_json(receipt.__dict__)
        return receipt

    def delete(self, rid: str) -> bool:
        """Delete a receipt's photo and the receipt; False when there is no such receipt."""
        if not RECEIPT.match(rid or ""):
            return False
        place = self.where / RECEIPTS / f"{rid}.json"
        with self._lock, storage_errors(self.where, "cannot delete from --feedback"):
            try:
                receipt = json.loads(place.read_bytes())
            except FileNotFoundError:
                return False
            photo = self.where / receipt["photo"]
            if photo.exists():
                photo.rm()
            place.rm()
        return True

    def expire(self, now: datetime | None = None) -> int:
        """Delete what is past its retention period; how many photos were deleted."""
        now = now or datetime.now(timezone.utc)
        deleted = 0
        folder = self.where / RECEIPTS
        try:
            names = [p for p in folder.fs.find(folder.path) if p.endswith(".json")]
        except (FileNotFoundError, NotADirectoryError):
            return 0
        for path in names:
            rid = path.rsplit("/", 1)[-1][:-5]
            try:
                receipt = json.loads(folder.child(path).read_bytes())
                if datetime.fromisoformat(receipt["keep_until"]) <= now:
                    deleted += self.delete(rid)
            except (FileNotFoundError, ValueError, KeyError):
                continue
        return deleted

    def start_expiry(self, every_s: float = 3600.0) -> threading.Thread:
        """Expire now, then every `every_s` seconds, in a daemon thread."""

        def loop():
            while True:
                try:
                    self.expire()
                except Exception:  # noqa: BLE001 - a storage hiccup: try again next time
                    pass
                time.sleep(every_s)

        thread = threading.Thread(target=loop, name="fruitlens-feedback-expiry", daemon=True)
        thread.start()
        return thread
