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

    def on_error(exc: OSError) -> None:
        where = getattr(exc, "filename", None) or root_path
        path = where if local else fs.unstrip_protocol(where)
        unreadable.append((path, f"unreadable folder: {_reason(exc)}"))

    if local:
        entries = (
            (info.get("name") or os.path.join(dirpath, name), info)
            for dirpath, _dirs, files in fs.walk(root_path, detail=True, on_error=on_error)
            for name, info in sorted(files.items())
        )
    else:  # object stores: one flat listing, paginated 1,000 keys per request
        entries = fs.find(root_path, detail=True).items()
    for full, info in entries:
        item = classify(fs, full, info, root_path, local)
        if item is not None:
            yield item


def classify(fs, full: str, info: dict, root_path: str, local: bool) -> ImageRef | str | None:
    """An image (ImageRef), another file (its extension), or None for hidden files."""
    sep = os.sep if local else "/"
    name = full.rsplit(sep, 1)[-1]
    if name.startswith("."):
        return None  # hidden files (.DS_Store, editor swap files) are not inputs
    ext = os.path.splitext(name)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        return ext or "(none)"
    rel = os.path.relpath(full, root_path) if local else posixpath.relpath(full, root_path)
    root_name = root_path.rstrip(sep).rsplit(sep, 1)[-1]
    label, split = label_and_split(tuple(rel.split(sep)), root_name)
    path = full if local else fs.unstrip_protocol(full)
    return ImageRef(path=path, label=label, split=split, size_bytes=int(info.get("size") or 0))


def plan_prefixes(uri: str, depth: int = 2) -> tuple[list[str], Listing]:
    """Object stores, on the driver: the prefixes `depth` folders below INPUT (for Fruits-360,
    one per split and class; their keys are then listed inside the Spark tasks, so the driver
    never holds every key) and the files found above that depth."""
    root = normalize(uri)
    fs, root_path = check_input(root)
    frontier, shallow = [root_path], []
    for _ in range(depth):
        deeper = []
        for prefix in frontier:
            for info in fs.ls(prefix, detail=True):  # delimiter listing, paginated
                (deeper if info["type"] == "directory" else shallow).append(info)
        frontier = [info["name"] for info in deeper]
    listing = Listing(images=[], skipped=Counter(), unreadable=[])
    for info in shallow:
        item = classify(fs, info["name"], info, root_path, local=False)
        if isinstance(item, ImageRef):
            listing.images.append(item)
        elif item is not None:
            listing.skipped[item] += 1
    return [fs.unstrip_protocol(p) for p in sorted(frontier)], listing


def list_prefix(prefix: str, root: str) -> Iterator[ImageRef | str]:
    """Object stores, inside a task: every key under one prefix (paginated), classified."""
    fs, path = filesystem(prefix)
    root_path = filesystem(root)[1]
    for key, info in sorted(fs.find(path, detail=True).items()):
        item = classify(fs, key, info, root_path, local=False)
        if item is not None:
            yield item


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    return getattr(exc, "strerror", None) or type(exc).__name__
