"""Every row schema fruitlens writes or passes between stages, and the error reasons, in one place.

Input identity (what makes an image "the same" across runs): `path` (+ `path_bytes`),
`size_bytes`, `modified_ns` and `etag`. Locally `modified_ns` is the file's mtime in nanoseconds
and `etag` is null; on S3 `modified_ns` is the object's LastModified and `etag` its ETag.

File names that are not valid UTF-8 (possible on Linux file systems): `path` shows each
undecodable byte as `\\xNN` (Python's "backslashreplace", readable and valid UTF-8 for Parquet,
Spark and pandas), and `path_bytes` holds the exact name as bytes (`os.fsencode` of the path),
so it can be opened again; `path_bytes` is null for every ordinary name.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from . import FruitlensError


@dataclass(frozen=True)
class ImageRef:
    """One input image, written once here: where it is, what makes it "the same" across runs
    (`IDENTITY`), its label and split. The row form is `INPUT`."""

    path: str  # absolute local path (display form) or full URI
    label: str | None
    split: str | None
    size_bytes: int
    modified_ns: int | None = None
    etag: str | None = None
    path_bytes: bytes | None = None  # exact local name when it is not valid UTF-8

    def row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> ImageRef:
        fields: dict[str, Any] = {name: row.get(name) for name in INPUT.names}  # a row's values are untyped
        return cls(**fields)


IDENTITY_FIELDS = [
    pa.field("path", pa.string()),
    pa.field("path_bytes", pa.binary()),
    pa.field("size_bytes", pa.int64()),
    pa.field("modified_ns", pa.int64()),
    pa.field("etag", pa.string()),
]
IDENTITY = [f.name for f in IDENTITY_FIELDS]

# What the listing hands to the embedding tasks (one row per input image).
INPUT = pa.schema([*IDENTITY_FIELDS, pa.field("label", pa.string()), pa.field("split", pa.string())])

EMBEDDINGS = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("label", pa.string()),
        pa.field("split", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("embedding", pa.list_(pa.float32())),
        pa.field("path_bytes", pa.binary()),
        pa.field("modified_ns", pa.int64()),
        pa.field("etag", pa.string()),
    ]
)

# With --views: every view but the whole photo (which is `embedding`), each one embedding.
VIEWS_FIELD = pa.field("views", pa.list_(pa.list_(pa.float32())))


def embeddings_schema(views: bool) -> pa.Schema:
    """EMBEDDINGS, with the `views` column last when the photos' views were embedded."""
    return EMBEDDINGS.append(VIEWS_FIELD) if views else EMBEDDINGS


ERRORS = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("label", pa.string()),
        pa.field("split", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("path_bytes", pa.binary()),
        pa.field("modified_ns", pa.int64()),
        pa.field("etag", pa.string()),
    ]
)

FEATURES = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("label", pa.string()),
        pa.field("split", pa.string()),
        pa.field("pca", pa.list_(pa.float64())),
    ]
)

PREDICTIONS = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("label", pa.string()),
        pa.field("predicted", pa.string()),
        pa.field("probability", pa.float64()),
        pa.field("not_sure", pa.bool_()),
        pa.field("why_not_sure", pa.string()),
        pa.field("novelty", pa.float64()),
        pa.field("top5", pa.list_(pa.struct([pa.field("label", pa.string()), pa.field("probability", pa.float64())]))),
        pa.field("split", pa.string()),
        pa.field("path_bytes", pa.binary()),
        # the level answered (species, family, or null: not sure), the species and family answered
        pa.field("level", pa.string()),
        pa.field("species", pa.string()),
        pa.field("family", pa.string()),
        pa.field("family_probability", pa.float64()),
    ]
)

# What each embedding task reports to the driver: one row per part file it wrote.
PARTS = pa.schema([pa.field("dataset", pa.string()), pa.field("file", pa.string()), pa.field("rows", pa.int64())])

# Object-store listing inside tasks: images and other files (counted by extension).
LISTED = pa.schema([pa.field("kind", pa.string()), *INPUT])


# The `split` column: a folder below INPUT (or INPUT itself) with one of these names, any case, puts
# the images under it in that split (Fruits-360's Training/ and Test/, and the names most datasets
# use); a `validation` split, when a collection has one, is the split `train` chooses on.
TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLIT_NAMES = {"training": TRAIN, "train": TRAIN, "val": VALIDATION, "validation": VALIDATION, "test": TEST}

# Error reasons: a stable category each (the `reason` column); `detail` says the rest.
# Content reasons depend only on the file's bytes (and --max-pixels), so an unchanged file keeps
# its error row in an incremental run; the others are tried again every run.
CONTENT_REASONS = ("empty", "not an image", "truncated", "corrupt", "decompression bomb")
ACCESS_REASONS = ("missing", "broken link", "symlink loop", "unreadable", "unreadable folder")
REASONS = CONTENT_REASONS + ACCESS_REASONS


def check_embeddings_columns(columns, where: str) -> None:
    """Refuse, in one line, a dataset without the columns every reader of embeddings needs."""
    missing = sorted({"path", "label", "split", "embedding"} - set(columns))
    if missing:
        raise FruitlensError(f"{where} is not an embeddings dataset: missing columns {missing}")


def display_path(path: str) -> tuple[str, bytes | None]:
    """(valid-UTF-8 display form, exact bytes or None) of a local path from os.* functions,
    which carry undecodable bytes as lone surrogates (PEP 383)."""
    try:
        path.encode("utf-8")
        return path, None
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return raw.decode("utf-8", "backslashreplace"), raw


def real_path(path: str, path_bytes: bytes | None) -> str:
    """The path to open: the exact name when the display form is not the real one."""
    return os.fsdecode(path_bytes) if path_bytes is not None else path
