"""Writer: Parquet datasets written by the Spark tasks themselves (pyarrow + fsspec), then
published by the driver with a `_SUCCESS` manifest listing every file and its row count.

Guarantees, for local folders and S3 alike:
- every task writes its own uniquely named part file under OUTPUT/_staging/<run id>/;
- the driver publishes only the files reported by the task attempt Spark accepted (one per
  partition), so a retried or speculative attempt never duplicates rows; other files are deleted;
- local: the staged folder replaces the old one by rename (a reader sees the old dataset, briefly
  nothing, or the new one, never a mix); S3 has no rename: new files are copied in under new names,
  `_SUCCESS` is written last (one atomic PUT), then the old files are deleted. Readers that follow
  `_SUCCESS` (fruitlens itself: `spark_io.dataset_files`) always see one complete dataset.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import filesystem, is_local, join, normalize, write_json

MANIFEST = "_SUCCESS"
STAGING = "_staging"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Target:
    """One dataset to publish: `final` (e.g. OUTPUT/embeddings) staged under OUTPUT/_staging/<run>/."""

    final: str
    output: str
    run_id: str

    @property
    def staging_root(self) -> str:
        return join(self.output, STAGING, self.run_id)

    @property
    def staging(self) -> str:
        return join(self.staging_root, os.path.basename(normalize(self.final).rstrip("/")))


class PartWriter:
    """Streams record batches of one task into one Parquet file (created on the first row)."""

    def __init__(self, target: Target, schema: pa.Schema, partition: int, attempt: int):
        self.target, self.schema = target, schema
        self.name = f"part-{partition:05d}-{target.run_id}-{attempt}-{uuid.uuid4().hex[:6]}.parquet"
        self.rows = 0
        self._file = self._writer = None

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is None:
            fs, path = filesystem(join(self.target.staging, self.name))
            if is_local(self.target.staging):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            self._file = fs.open(path, "wb")
            self._writer = pq.ParquetWriter(self._file, self.schema, compression="zstd")
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> tuple[str, int] | None:
        if self._writer is None:
            return None
        self._writer.close()
        self._file.close()
        return self.name, self.rows


def publish(target: Target, parts: list[tuple[str, int]], schema: pa.Schema) -> dict:
    """Make the staged parts the dataset at `target.final`; returns the manifest."""
    fs, staging = filesystem(target.staging)
    parts = sorted(parts)
    if not parts:  # an empty dataset still carries its schema
        name = f"part-00000-{target.run_id}-empty.parquet"
        if is_local(target.staging):
            os.makedirs(staging, exist_ok=True)
        with fs.open(filesystem(join(target.staging, name))[1], "wb") as f:
            pq.write_table(schema.empty_table(), f, compression="zstd")
        parts = [(name, 0)]
    keep = {name for name, _ in parts}
    for path in fs.find(staging):  # attempts Spark did not accept
        if os.path.basename(path) not in keep:
            fs.rm_file(path)
    manifest = {
        "format": "parquet",
        "run_id": target.run_id,
        "rows": sum(rows for _, rows in parts),
        "files": [{"path": name, "rows": rows} for name, rows in parts],
        "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
    }
    _publish_tree(target, manifest)
    return manifest


def publish_tree(local_dir: str, target: Target) -> dict:
    """Publish a folder written on this machine (e.g. a saved Spark ML model) to `target.final`."""
    files = []
    for root, _dirs, names in os.walk(local_dir):
        for name in names:
            full = os.path.join(root, name)
            files.append((os.path.relpath(full, local_dir), os.path.getsize(full)))
    fs, staging = filesystem(target.staging)
    if is_local(target.staging):
        os.makedirs(os.path.dirname(staging), exist_ok=True)
        shutil.copytree(local_dir, staging)
    else:
        for rel, _ in files:
            fs.put_file(os.path.join(local_dir, rel), f"{staging}/{rel}")
    manifest = {"format": "tree", "run_id": target.run_id, "files": [{"path": p, "bytes": b} for p, b in sorted(files)]}
    _publish_tree(target, manifest)
    return manifest


def publish_staged_tree(target: Target) -> dict:
    """Publish a folder something else (Spark's JVM) already wrote into `target.staging`."""
    fs, staging = filesystem(target.staging)
    files = sorted((p[len(staging) + 1 :], int(info.get("size") or 0)) for p, info in fs.find(staging, detail=True).items())
    manifest = {"format": "tree", "run_id": target.run_id, "files": [{"path": p, "bytes": b} for p, b in files]}
    _publish_tree(target, manifest)
    return manifest


def _publish_tree(target: Target, manifest: dict) -> None:
    fs, staging = filesystem(target.staging)
    _, final = filesystem(target.final)
    if is_local(target.final):
        write_json(join(target.staging, MANIFEST), manifest)
        old = None
        if os.path.exists(final):
            old = f"{staging}.old"
            os.rename(final, old)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.rename(staging, final)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return
    # S3: no rename. Withdraw the old manifest, copy the new files in (new names for data files),
    # write the new manifest last, then delete what the new manifest does not list.
    new_files = {f["path"] for f in manifest["files"]}
    if fs.exists(f"{final}/{MANIFEST}"):
        fs.rm_file(f"{final}/{MANIFEST}")
    for rel in sorted(new_files):
        fs.copy(f"{staging}/{rel}", f"{final}/{rel}")
    write_json(join(target.final, MANIFEST), manifest)
    for path in fs.find(final):
        rel = path[len(final) + 1 :]
        if rel != MANIFEST and rel not in new_files:
            fs.rm_file(path)
    fs.rm(staging, recursive=True)


def cleanup(output: str, run_id: str) -> None:
    """Remove this run's staging area (and the staging folder itself when empty)."""
    fs, path = filesystem(join(output, STAGING, run_id))
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
        root = filesystem(join(output, STAGING))[1]
        if is_local(output) and os.path.isdir(root) and not os.listdir(root):
            os.rmdir(root)
    except OSError:
        pass
