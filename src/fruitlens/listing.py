"""Reader: lists the images under INPUT and derives label and split from their paths."""

from __future__ import annotations

import os
import posixpath
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

from . import FruitlensError
from .config import IMAGE_EXTENSIONS
from .storage import filesystem, is_local, normalize

SPLIT_NAMES = {"training": "train", "test": "test"}


@dataclass(frozen=True)
class ImageRef:
    path: str  # absolute local path, or full URI for remote stores
    label: str | None
    split: str | None
    size_bytes: int


@dataclass
class Listing:
    images: list[ImageRef]
    skipped: Counter  # other files found, by extension
    unreadable: list[tuple[str, str]]  # folders that could not be listed: (path, reason)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def label_and_split(relative_parts: tuple[str, ...], root_name: str) -> tuple[str | None, str | None]:
    """Label = parent folder name; split from a `Training`/`Test` part (any case) under INPUT.

    `relative_parts` are the path components below INPUT, file name last; the INPUT folder's own
    name counts too, so `fruitlens featurize .../Test out` still knows its split.
    """
    folders = (root_name, *relative_parts[:-1])
    label = folders[-1] if folders and folders[-1] else None
    split = None
    for part in folders:
        split = SPLIT_NAMES.get(part.lower(), split)
    return label, split


def check_input(uri: str):
    """(filesystem, path) of INPUT, or a clear error if it is missing or not a folder."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        if not is_local(uri):
            bucket = path.split("/", 1)[0]
            if not fs.exists(bucket):
                raise FruitlensError(f"bucket not found: s3://{bucket}")
            raise FruitlensError(f"INPUT not found: no objects under {uri}")
        raise FruitlensError(f"INPUT not found: {uri}")
    if not fs.isdir(path):
        raise FruitlensError(f"INPUT must be a folder of images, got a file: {uri}")
    return fs, path


def list_images(uri: str) -> Listing:
    """Every file under `uri`; images (by extension, any case) are returned, others counted."""
    root = normalize(uri)
    fs, root_path = check_input(root)
    images: list[ImageRef] = []
    skipped: Counter = Counter()
    unreadable: list[tuple[str, str]] = []
    for ref_or_ext in _walk(fs, root, root_path, unreadable):
        if isinstance(ref_or_ext, ImageRef):
            images.append(ref_or_ext)
        else:
            skipped[ref_or_ext] += 1
    images.sort(key=lambda r: r.path)
    return Listing(images=images, skipped=skipped, unreadable=unreadable)


def _walk(fs, root: str, root_path: str, unreadable: list) -> Iterator[ImageRef | str]:
    local = is_local(root)
    sep = os.sep if local else "/"
    root_name = (os.path.basename if local else posixpath.basename)(root_path.rstrip(sep))
    def on_error(exc: OSError) -> None:
        where = getattr(exc, "filename", None) or root_path
        path = where if local else fs.unstrip_protocol(where)
        unreadable.append((path, f"unreadable folder: {_reason(exc)}"))

    if local:
        entries = (
            (info.get("name") or os.path.join(dirpath, name), name, info)
            for dirpath, _dirs, files in fs.walk(root_path, detail=True, on_error=on_error)
            for name, info in sorted(files.items())
        )
    else:  # object stores: one flat listing, paginated 1,000 keys per request
        entries = ((key, posixpath.basename(key), info) for key, info in fs.find(root_path, detail=True).items())
    for full, name, info in entries:
        if name.startswith("."):
            continue  # hidden files (.DS_Store, editor swap files) are not inputs
        ext = os.path.splitext(name)[1].lower()
        if ext not in IMAGE_EXTENSIONS:
            yield ext or "(none)"
            continue
        rel = os.path.relpath(full, root_path) if local else posixpath.relpath(full, root_path)
        label, split = label_and_split(tuple(rel.split(sep)), root_name)
        path = full if local else fs.unstrip_protocol(full)
        yield ImageRef(path=path, label=label, split=split, size_bytes=int(info.get("size") or 0))


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    return getattr(exc, "strerror", None) or type(exc).__name__
