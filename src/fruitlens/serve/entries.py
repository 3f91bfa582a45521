"""What both similar-image indexes (`index.NeighbourIndex` in memory, `saved_index.SavedIndex`
memory-mapped) answer with: an indexed image (`Entry`), a search answer (`Neighbour`), the image's
id, and its bytes.

Images are addressed by a stable id only: the first 16 hex digits of the sha256 of the indexed
path. No client-sent string ever becomes a path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..embedding.decode import image_format
from ..storage.location import Location, S3Options

ID_PATTERN = re.compile(r"\A[0-9a-f]{16}\Z")  # \Z: no trailing newline ($ takes one)
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}


def image_id(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass(frozen=True)
class Entry:
    id: str
    path: str  # as indexed (for display: never sent to clients)
    source: str  # what to open: the path, or the exact bytes' name for non-UTF-8 names
    label: str | None
    split: str | None


@dataclass
class Neighbour:
    entry: Entry
    similarity: float


def read_image(entry: Entry, s3: S3Options) -> tuple[bytes, str]:
    """The image's bytes and media type. Raises FileNotFoundError when it is gone."""
    data = Location.of(entry.source, s3).read_bytes()
    return data, MEDIA_TYPES.get(image_format(data) or "", "application/octet-stream")
