"""Publishing: make a set of finished part files the new version of a dataset, atomically for
its readers, with a `_SUCCESS` manifest. Two publishers, chosen once per location:

- local folders: every file of the new version is gathered in the staging folder (files kept from
  the previous version or from an interrupted run are hard-linked, not copied), the manifest
  written, then the staged folder replaces the old one by rename. A reader sees the old dataset
  or the new one, never a mix.
- object stores (no rename): files not yet in the dataset's prefix are copied in under their own
  (new) names, the old manifest having been withdrawn first; the new `_SUCCESS` is written last
  (one atomic PUT), then files the new manifest does not list are deleted. Readers that follow
  `_SUCCESS` always see one complete dataset.

Only the files the driver names are published: the accepted attempt of each task, never a retried
or speculative duplicate. Everything else in the staging folder is deleted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .location import Location
from .manifest import MANIFEST, Manifest, write_manifest
from .writer import STAGING, Target


@dataclass(frozen=True)
class Part:
    """One finished part file: its name in the dataset, its rows, and where it is now."""

    name: str
    rows: int
    source: Location


class LocalPublisher:
    def publish(self, target: Target, parts: list[Part], manifest: Manifest) -> None:
        staging = target.staging.path
        os.makedirs(staging, exist_ok=True)
        keep = {p.name for p in parts}
        for name in os.listdir(staging):  # attempts Spark did not accept
            if name not in keep:
                os.remove(os.path.join(staging, name))
        for part in parts:
            dest = os.path.join(staging, part.name)
            if part.source.path != dest:
                _link_or_copy(part.source.path, dest)
            elif not os.path.exists(dest):
                raise FileNotFoundError(
                    f"part file {dest} disappeared before publishing (another run into this OUTPUT?)"
                )
        self.publish_tree(target, manifest)

    def publish_tree(self, target: Target, manifest: Manifest) -> None:
        """The staged folder, manifest written, replaces the final one by rename."""
        write_manifest(target.staging, manifest)
        final, staging = target.final.path, target.staging.path
        old = None
        if os.path.lexists(final):
            old = f"{staging}.old"
            os.rename(final, old)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.rename(staging, final)
        if old:
            shutil.rmtree(old, ignore_errors=True)


class ObjectStorePublisher:
    def publish(self, target: Target, parts: list[Part], manifest: Manifest) -> None:
        # Part files always have new names, so the old manifest stays valid (and readers keep
        # reading the old version) until the new one replaces it.
        fs, final = target.final.fs, target.final.path
        for part in parts:
            dest = f"{final}/{part.name}"
            if part.source.path != dest:
                fs.copy(part.source.path, dest)
        self._finish(target, manifest)

    def publish_tree(self, target: Target, manifest: Manifest) -> None:
        fs, final, staging = target.final.fs, target.final.path, target.staging.path
        if fs.exists(f"{final}/{MANIFEST}"):
            fs.rm_file(f"{final}/{MANIFEST}")
        for f in manifest.files:
            fs.copy(f"{staging}/{f['path']}", f"{final}/{f['path']}")
        self._finish(target, manifest)

    def _finish(self, target: Target, manifest: Manifest) -> None:
        fs, final = target.final.fs, target.final.path
        write_manifest(target.final, manifest)
        listed = {f["path"] for f in manifest.files} | {MANIFEST}
        for path in fs.find(final):
            if path[len(final) + 1 :] not in listed:
                fs.rm_file(path)
        if fs.exists(target.staging.path):
            fs.rm(target.staging.path, recursive=True)


def publisher_for(location: Location) -> LocalPublisher | ObjectStorePublisher:
    return LocalPublisher() if location.is_local else ObjectStorePublisher()


def publish(target: Target, parts: list[Part], schema: pa.Schema, params: dict | None = None) -> Manifest:
    """Make `parts` the dataset at `target.final`; returns its manifest. An empty dataset still
    gets one (empty) file carrying its schema."""
    parts = sorted(parts, key=lambda p: p.name)
    if not parts:
        name = f"part-00000-{target.run_id}-empty.parquet"
        with (target.staging / name).open("wb") as f:
            pq.write_table(schema.empty_table(), f, compression="zstd")
        parts = [Part(name, 0, target.staging / name)]
    manifest = Manifest.for_parquet(target.run_id, [(p.name, p.rows) for p in parts], schema, params)
    publisher_for(target.final).publish(target, parts, manifest)
    return manifest


def staged_parts(target: Target, written: list[tuple[str, int]]) -> list[Part]:
    """Parts the tasks of this run wrote into `target.staging`."""
    return [Part(name, rows, target.staging / name) for name, rows in written]


def publish_tree(local_dir: str, target: Target, params: dict | None = None) -> Manifest:
    """Publish a folder written on this machine (e.g. a saved Spark ML model) to `target.final`."""
    files = []
    for root, _dirs, names in os.walk(local_dir):
        for name in names:
            full = os.path.join(root, name)
            files.append((os.path.relpath(full, local_dir), os.path.getsize(full)))
    if target.staging.is_local:
        os.makedirs(os.path.dirname(target.staging.path), exist_ok=True)
        shutil.copytree(local_dir, target.staging.path)
    else:
        for rel, _ in files:
            target.staging.fs.put_file(os.path.join(local_dir, rel), f"{target.staging.path}/{rel}")
    manifest = Manifest("tree", target.run_id, [{"path": p, "bytes": b} for p, b in sorted(files)], params=params or {})
    publisher_for(target.final).publish_tree(target, manifest)
    return manifest


def publish_staged_tree(target: Target, params: dict | None = None) -> Manifest:
    """Publish a folder something else (Spark's JVM) already wrote into `target.staging`."""
    fs, staging = target.staging.fs, target.staging.path
    files = sorted(
        (p[len(staging) + 1 :], int(info.get("size") or 0)) for p, info in fs.find(staging, detail=True).items()
    )
    manifest = Manifest("tree", target.run_id, [{"path": p, "bytes": b} for p, b in files], params=params or {})
    publisher_for(target.final).publish_tree(target, manifest)
    return manifest


def _link_or_copy(src: str, dest: str) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another file system, or links not supported
        shutil.copy2(src, dest)


def cleanup(output: Location, *run_ids: str) -> None:
    """Remove these runs' staging areas, and the staging folder itself when it is left empty."""
    root = output / STAGING
    try:
        for run_id in run_ids:
            where = root / run_id
            if where.exists():
                where.rm(recursive=True)
        if output.is_local and os.path.isdir(root.path) and not os.listdir(root.path):
            os.rmdir(root.path)
    except OSError:
        pass
