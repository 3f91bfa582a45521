"""Reader: lists the images under INPUT with their identity, label and split.

Local folders are walked on the driver with `os.scandir`: symbolic links to folders are followed
(a link back to one of its own ancestors is a loop: reported once as a `symlink loop` error row
and not entered), broken links and unreadable folders become error rows saying so, and file names
that are not valid UTF-8 keep their exact bytes (see `schemas`). Object stores are listed by key
(`plan_prefixes` on the driver, `list_prefix` inside tasks).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from .. import FruitlensError
from ..config import IMAGE_EXTENSIONS
from ..schemas import SPLIT_NAMES, ImageRef, display_path
from ..storage.location import Location


@dataclass(frozen=True)
class Problem:
    """Something under INPUT that is (or may be) an input but cannot be read: an error row."""

    path: str
    reason: str
    detail: str
    label: str | None = None
    split: str | None = None
    path_bytes: bytes | None = None


@dataclass
class Listing:
    images: list[ImageRef] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # other files found, by extension
    problems: list[Problem] = field(default_factory=list)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def add(self, item) -> None:
        if isinstance(item, ImageRef):
            self.images.append(item)
        elif isinstance(item, Problem):
            self.problems.append(item)
        elif item is not None:
            self.skipped[item] += 1


def label_and_split(relative_parts: tuple[str, ...], root_name: str) -> tuple[str | None, str | None]:
    """Label = parent folder name; split from a part named as in `schemas.SPLIT_NAMES` (Training,
    Test, train, val, validation, test; any case) under INPUT, the deepest one winning.

    `relative_parts` are the path components below INPUT, file name last; the INPUT folder's own
    name counts too, so `fruitlens featurize .../Test out` still knows its split.
    """
    folders = (root_name, *relative_parts[:-1])
    label = folders[-1] if folders and folders[-1] else None
    split = None
    for part in folders:
        split = SPLIT_NAMES.get(part.lower(), split)
    return label, split


def check_input(root: Location) -> None:
    """A clear error if INPUT is missing or not a folder."""
    fs, path = root.fs, root.path
    if root.is_local:
        if not os.path.exists(path):
            if os.path.lexists(path):
                raise FruitlensError(f"INPUT is a broken symbolic link: {root.uri} -> {os.readlink(path)}")
            raise FruitlensError(f"INPUT not found: {root.uri}")
        if not os.path.isdir(path):
            raise FruitlensError(f"INPUT must be a folder of images, got a file: {root.uri}")
        return
    if not fs.exists(path):
        bucket = path.split("/", 1)[0]
        if not fs.exists(bucket):
            raise FruitlensError(f"bucket not found: s3://{bucket}")
        raise FruitlensError(f"INPUT not found: no objects under {root.uri}")
    if not fs.isdir(path):
        raise FruitlensError(f"INPUT must be a folder of images, got a file: {root.uri}")


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _extension(name: str) -> str:
    return os.path.splitext(name)[1].lower() or "(none)"


# -- local folders ---------------------------------------------------------------------------------


def list_local(root: Location) -> Listing:
    """Every file under a local folder: images returned with their identity, others counted."""
    check_input(root)
    listing = Listing()
    for item in walk_local(root.path):
        listing.add(item)
    listing.images.sort(key=lambda r: r.path)
    return listing


def walk_local(root: str) -> Iterator[ImageRef | Problem | str]:
    """Depth-first, sorted by name; follows links to folders, never forever."""
    root = os.path.abspath(root)
    root_name = _display(os.path.basename(root.rstrip(os.sep)))
    top = os.stat(root)
    # Each stack entry: (folder path as walked, relative parts, ancestors' (device, inode) -> path)
    stack = [(root, (), {(top.st_dev, top.st_ino): root})]
    while stack:
        folder, parts, ancestors = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            label, split = label_and_split((*parts, ""), root_name)
            path, raw = display_path(folder)
            yield Problem(path, "unreadable folder", _os_reason(exc), label, split, raw)
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files (.DS_Store, editor swap files) are not inputs
            rel = (*parts, _display(entry.name))
            item = _local_entry(entry, rel, root_name, ancestors)
            if isinstance(item, tuple):
                subfolders.append(item)
            elif item is not None:
                yield item
        for path, key in reversed(subfolders):
            rel = (*parts, _display(os.path.basename(path)))
            stack.append((path, rel, {**ancestors, key: path}))


def _local_entry(entry: os.DirEntry, rel: tuple[str, ...], root_name: str, ancestors: dict):
    """An ImageRef, a Problem, an extension (other file), None (ignored), or (folder, key) to enter."""
    label, split = label_and_split(rel, root_name)
    path, raw = display_path(entry.path)
    link = entry.is_symlink()
    try:
        st = os.stat(entry.path)  # follows links
    except OSError as exc:
        if not link:
            return Problem(
                path, "missing" if exc.errno == errno.ENOENT else "unreadable", _os_reason(exc), label, split, raw
            )
        if exc.errno == errno.ELOOP:
            return Problem(
                path, "symlink loop", f"the link resolves to itself ({_readlink(entry.path)})", label, split, raw
            )
        if exc.errno == errno.ENOENT:
            if is_image_name(entry.name) or not os.path.splitext(entry.name)[1]:
                return Problem(
                    path, "broken link", f"points to {_readlink(entry.path)}, which does not exist", label, split, raw
                )
            return _extension(entry.name)
        return Problem(path, "unreadable", _os_reason(exc), label, split, raw)
    if stat.S_ISDIR(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            return Problem(
                path,
                "symlink loop",
                f"links back to its ancestor folder {display_path(ancestors[key])[0]}",
                label,
                split,
                raw,
            )
        return (entry.path, key)
    if not is_image_name(entry.name):
        return _extension(entry.name)
    if not stat.S_ISREG(st.st_mode):
        return Problem(path, "unreadable", "not a regular file (a pipe, socket or device)", label, split, raw)
    return ImageRef(
        path=path, label=label, split=split, size_bytes=st.st_size, modified_ns=st.st_mtime_ns, path_bytes=raw
    )


def _display(name: str) -> str:
    return display_path(name)[0]


def _readlink(path: str) -> str:
    try:
        return display_path(os.readlink(path))[0]
    except OSError:
        return "?"


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    return getattr(exc, "strerror", None) or type(exc).__name__


# -- object stores ---------------------------------------------------------------------------------


def classify_key(root: Location, key: str, info: dict) -> ImageRef | str | None:
    """An object under INPUT: an image (ImageRef), another file (its extension), or None (hidden)."""
    name = key.rsplit("/", 1)[-1]
    if name.startswith("."):
        return None
    if not is_image_name(name):
        return _extension(name)
    rel = posixpath.relpath(key, root.path)
    label, split = label_and_split(tuple(rel.split("/")), root.path.rstrip("/").rsplit("/", 1)[-1])
    modified = info.get("LastModified")
    etag = info.get("ETag")
    return ImageRef(
        path=root.fs.unstrip_protocol(key),
        label=label,
        split=split,
        size_bytes=int(info.get("size") or 0),
        modified_ns=int(modified.timestamp()) * 1_000_000_000 + modified.microsecond * 1000 if modified else None,
        etag=etag.strip('"') if etag else None,
    )


def list_images(root: Location) -> Listing:
    """Every image under INPUT, listed here (the driver): local folders walked, object stores
    listed key by key. `featurize` lists object stores inside tasks instead (`plan_prefixes`)."""
    if root.is_local:
        return list_local(root)
    check_input(root)
    listing = Listing()
    for key, info in sorted(root.fs.find(root.path, detail=True).items()):
        listing.add(classify_key(root, key, info))
    return listing


def plan_prefixes(root: Location, depth: int = 2) -> tuple[list[Location], Listing]:
    """Object stores, on the driver: the prefixes `depth` folders below INPUT (for Fruits-360,
    one per split and class; their keys are then listed inside the Spark tasks, so the driver
    never holds every key) and the files found above that depth."""
    check_input(root)
    fs = root.fs
    frontier, shallow = [root.path], []
    for _ in range(depth):
        deeper = []
        for prefix in frontier:
            for info in fs.ls(prefix, detail=True):  # delimiter listing, paginated
                (deeper if info["type"] == "directory" else shallow).append(info)
        frontier = [info["name"] for info in deeper]
    listing = Listing()
    for info in shallow:
        listing.add(classify_key(root, info["name"], info))
    return [root.child(p) for p in sorted(frontier)], listing


def list_prefix(prefix: Location, root: Location) -> Iterator[ImageRef | str]:
    """Object stores, inside a task: every key under one prefix (paginated), classified."""
    for key, info in sorted(prefix.fs.find(prefix.path, detail=True).items()):
        item = classify_key(root, key, info)
        if item is not None:
            yield item
