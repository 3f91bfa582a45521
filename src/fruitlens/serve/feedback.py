"""Users' corrections that grow the collection, kept only with consent.

`POST /api/v1/feedback` with the person's explicit consent stores the question's photos (1 to 5,
one receipt) under `--feedback LOCATION` (a local folder or s3://) in the layout `featurize` reads,
so the next incremental `run` and `train` learn from it:

    LOCATION/train/<species>/<receipt>-<n>.jpg    the species is one of the model's catalogue
    LOCATION/unconfirmed/<receipt>/<n>.jpg        free text: kept apart, not trained on until a
                                                  person files it under a species
    LOCATION/receipts/<receipt>.json              what was answered and said, when, until when

No path holds a person's words: a folder is a catalogue species or the receipt id; what was said
stays in the receipt. The photos are decoded and written again as new JPEGs from their pixels only:
EXIF (GPS position, camera, time), XMP, ICC profiles and comments are gone (the orientation is
applied first, so a photo looks as it did). Local files are written 0600 in 0700 folders; S3
objects with the private ACL. The receipt id is random (128 bits) and is the only way to the photos:
`DELETE /api/v1/feedback/{receipt}` deletes every photo of the question, the receipt, and the
folders they leave empty. Deletion only ever removes paths of the store's own layout made from the
receipt id (a receipt naming `../x` is ignored), and a receipt cut short or unreadable never blocks
it: the photos are then found by their names. Retention follows the current
`--feedback-retention-days` (at start, then hourly): a photo is deleted at the earlier of the date
its person was told and its day of storage plus the current setting, so lowering the setting
shortens what is already kept. Without consent nothing is stored, not even in a log.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from PIL import Image

from .. import FruitlensError
from ..config import ServeConfig
from ..embedding.decode import DecodeError, open_rgb
from ..storage.location import Location, storage_errors

RECEIPT = re.compile(r"\A[0-9a-f]{32}\Z")  # \Z: no trailing newline ($ takes one)
RECEIPTS, TRAIN, UNCONFIRMED = "receipts", "train", "unconfirmed"
_NAME = re.compile(r"(?:\A|/)(?P<rid>[0-9a-f]{32})(?:-\d+)?\.jpg\Z|/(?P<dir>[0-9a-f]{32})/\d+\.jpg\Z")


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


@dataclass
class Receipt:
    id: str
    stored_at: str
    keep_until: str
    photos: list[str]  # relative to LOCATION, in the order sent
    said: str  # what the person says it is
    answered: str | None  # what the app had answered
    confirmed: bool  # `said` is a species of the model's catalogue
    species: str | None = field(default=None)  # that species, as the catalogue names it


def own_path(rid: str, relative: object) -> bool:
    """Whether `relative` is a path the store itself makes for receipt `rid` (this layout or the
    one before it): never outside the store, never another receipt's."""
    if not isinstance(relative, str) or "\\" in relative or "\x00" in relative:
        return False
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts) or posixpath.normpath(relative) != relative:
        return False
    if len(parts) == 3 and parts[0] == TRAIN:
        return re.fullmatch(rf"{rid}(-\d+)?\.jpg", parts[2]) is not None
    if len(parts) == 3 and parts[0] == UNCONFIRMED:
        return (parts[1] == rid and re.fullmatch(r"\d+\.jpg", parts[2]) is not None) or parts[2] == f"{rid}.jpg"
    return False


class FeedbackStore:
    def __init__(self, where: Location, retention_days: int, species: list[str]):
        if retention_days < 1:
            raise FruitlensError("--feedback-retention-days must be at least 1")
        self.where, self.retention = where, timedelta(days=retention_days)
        self.species = {s.casefold(): s for s in species}
        self._lock = threading.Lock()
        self._acl = not where.is_local  # S3: the private ACL, unless the bucket has ACLs disabled
        with storage_errors(where, "cannot write --feedback"):
            probe = where / ".write-test"
            self._write(probe, b"")
            probe.rm()

    # -- writing, deleting: only inside the store ------------------------------------------------
    def _write(self, place: Location, data: bytes) -> None:
        """Write owner-only: 0600 in 0700 folders locally, the private ACL on S3."""
        if place.is_local:
            for _ in range(3):  # a folder pruned by a concurrent deletion between makedirs and open
                os.makedirs(os.path.dirname(place.path), mode=0o700, exist_ok=True)
                try:
                    fd = os.open(place.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                except FileNotFoundError:
                    continue
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(place.path, 0o600)  # also when it existed with other permissions
                return
            raise FileNotFoundError(place.path)
        if self._acl:
            try:
                place.fs.pipe_file(place.path, data, ACL="private")
                return
            except OSError as exc:
                if "AccessControlListNotSupported" not in str(exc):
                    raise
                self._acl = False  # ACLs disabled on the bucket: objects are private to its owner
        place.fs.pipe_file(place.path, data)

    def _remove(self, relative: str) -> None:
        """Remove one file of the store (gone already is fine) and the folders it leaves empty,
        up to the store itself (excluded)."""
        place = self.where / relative
        try:
            place.rm()
        except FileNotFoundError:
            pass
        if not place.is_local:
            return  # no folders in an object store
        root = os.path.realpath(self.where.path)
        folder = os.path.dirname(place.path)
        while os.path.realpath(folder).startswith(root + os.sep):
            try:
                os.rmdir(folder)
            except OSError:  # not empty (or gone): the folders above are not empty either
                break
            folder = os.path.dirname(folder)

    def _find(self, rid: str) -> list[str]:
        """The photos of `rid` by their names, whatever its receipt says."""
        base = self.where.path.rstrip("/")
        patterns = (f"{TRAIN}/*/{rid}*.jpg", f"{UNCONFIRMED}/{rid}/*.jpg", f"{UNCONFIRMED}/*/{rid}.jpg")
        found = []
        for pattern in patterns:
            for path in self.where.fs.glob(f"{base}/{pattern}"):
                relative = path[len(base) + 1 :] if path.startswith(base + "/") else None
                if relative and own_path(rid, relative):
                    found.append(relative)
        return sorted(set(found))

    # -- the routes' operations ------------------------------------------------------------------
    def store(
        self, photos: list[bytes], said: str, answered: str | None, max_pixels: int = ServeConfig.max_pixels
    ) -> Receipt:
        """Clean and store a question's photos under one receipt. Raises DecodeError (naming the
        photo when there are several) for bytes that are no photo we take: then nothing is kept."""
        clean = []
        for i, data in enumerate(photos):
            try:
                clean.append(clean_jpeg(data, max_pixels=max_pixels))
            except DecodeError as exc:
                raise DecodeError(
                    exc.reason, f"photo {i + 1}: {exc.detail}" if len(photos) > 1 else exc.detail
                ) from None
        rid = secrets.token_hex(16)
        species = self.species.get(" ".join(said.split()).casefold())
        if species:
            relative = [f"{TRAIN}/{species}/{rid}-{n}.jpg" for n in range(len(clean))]
        else:
            relative = [f"{UNCONFIRMED}/{rid}/{n}.jpg" for n in range(len(clean))]
        now = datetime.now(timezone.utc)
        receipt = Receipt(
            rid,
            now.isoformat(timespec="seconds"),
            (now + self.retention).isoformat(timespec="seconds"),
            relative,
            said[:200],
            (answered or None) and answered[:200],
            species is not None,
            species,
        )
        with storage_errors(self.where, "cannot write --feedback"):
            # the receipt first: no photo is ever kept without the receipt that deletes it
            self._write(self.where / RECEIPTS / f"{rid}.json", json.dumps(receipt.__dict__, indent=2).encode() + b"\n")
            try:
                for path, data in zip(relative, clean):
                    self._write(self.where / path, data)
            except BaseException:
                self._delete(rid)
                raise
        return receipt

    def delete(self, rid: str) -> bool:
        """Delete every photo of a receipt, the receipt and the folders left empty; False when
        there is no such receipt."""
        if not RECEIPT.match(rid or ""):
            return False
        with storage_errors(self.where, "cannot delete from --feedback"):
            return self._delete(rid)

    def _delete(self, rid: str) -> bool:
        place = self.where / RECEIPTS / f"{rid}.json"
        with self._lock:
            try:
                raw = place.read_bytes()
            except FileNotFoundError:
                return False
            photos = _photos_of(raw)
            if photos is None or not all(own_path(rid, p) for p in photos):
                photos = self._find(rid)  # cut short, unreadable or naming elsewhere: by their names
            for relative in photos:
                self._remove(relative)
            self._remove(f"{RECEIPTS}/{rid}.json")
        return True

    def expire(self, now: datetime | None = None) -> int:
        """Delete what is past its retention period under the current setting; how many questions
        (and photos without a receipt) were deleted."""
        now = now or datetime.now(timezone.utc)
        deleted = 0
        receipts = self.where / RECEIPTS
        try:
            listed = receipts.fs.find(receipts.path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            listed = {}
        known = set()
        for path, info in listed.items():
            name = path.rsplit("/", 1)[-1]
            if not (name.endswith(".json") and RECEIPT.match(name[:-5])):
                continue
            rid = name[:-5]
            known.add(rid)
            try:
                raw = receipts.child(path).read_bytes()
            except FileNotFoundError:
                continue
            if self.until(raw, _modified(info)) <= now:
                deleted += self.delete(rid)
            else:
                self._move_words_out(rid, raw)
        for relative, info in self._photos_listed():  # photos whose receipt is gone: by their age
            match = _NAME.search(relative)
            rid = match and (match["rid"] or match["dir"])
            if rid and rid not in known and own_path(rid, relative) and _modified(info) + self.retention <= now:
                with self._lock, storage_errors(self.where, "cannot delete from --feedback"):
                    self._remove(relative)
                deleted += 1
        self._prune()
        return deleted

    def _move_words_out(self, rid: str, raw: bytes) -> None:
        """A photo kept by an earlier version under `unconfirmed/<the person's words>/`: moved to
        `unconfirmed/<receipt>/0.jpg`, its receipt rewritten, the words' folder removed."""
        try:
            receipt = json.loads(raw)
            old = receipt["photo"]
        except (ValueError, KeyError, TypeError):
            return
        if not (isinstance(old, str) and old.startswith(UNCONFIRMED + "/") and own_path(rid, old)):
            return
        new = f"{UNCONFIRMED}/{rid}/0.jpg"
        with self._lock, storage_errors(self.where, "cannot write --feedback"):
            try:
                self._write(self.where / new, (self.where / old).read_bytes())
            except FileNotFoundError:
                return
            receipt.pop("photo")
            receipt["photos"] = [new]
            self._write(self.where / RECEIPTS / f"{rid}.json", json.dumps(receipt, indent=2).encode() + b"\n")
            self._remove(old)

    def until(self, raw: bytes, modified: datetime) -> datetime:
        """When a receipt's photos are deleted: the earlier of what its person was told and its
        day of storage plus the current retention (the file's date when the receipt is unreadable)."""
        try:
            receipt = json.loads(raw)
            stored = _aware(datetime.fromisoformat(receipt["stored_at"]))
            told = _aware(datetime.fromisoformat(receipt["keep_until"]))
        except (ValueError, KeyError, TypeError):
            return modified + self.retention
        return min(told, stored + self.retention)

    def _photos_listed(self) -> list[tuple[str, dict]]:
        base = self.where.path.rstrip("/")
        found = []
        for top in (TRAIN, UNCONFIRMED):
            try:
                listed = self.where.fs.find(f"{base}/{top}", detail=True)
            except (FileNotFoundError, NotADirectoryError):
                continue
            found += [(p[len(base) + 1 :], info) for p, info in listed.items() if p.startswith(base + "/")]
        return found

    def _prune(self) -> None:
        """Remove empty folders left in the store (by older versions, or a deletion cut short)."""
        if not self.where.is_local:
            return
        for top in (TRAIN, UNCONFIRMED, RECEIPTS):
            for folder, _, _ in sorted(os.walk(os.path.join(self.where.path, top)), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)

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


def _photos_of(raw: bytes) -> list[str] | None:
    """The photos a receipt names (this layout's `photos`, the previous one's `photo`); None when
    it cannot be read."""
    try:
        receipt = json.loads(raw)
        photos = receipt["photos"] if "photos" in receipt else [receipt["photo"]]
    except (ValueError, KeyError, TypeError):
        return None
    return photos if isinstance(photos, list) else None


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _modified(info: dict) -> datetime:
    """A listed file's modification time (local mtime or S3's LastModified), UTC."""
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    return datetime.now(timezone.utc)  # unknown: as if new, deleted a retention period from now
