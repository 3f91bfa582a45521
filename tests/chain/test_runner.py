"""The partition runner and publishing in plain Python: no Spark, no ../shared. A fake backbone
(mean colour of a few regions) stands in for the network, images are made here."""

from __future__ import annotations

import io
import json
import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fruitlens import schemas
from fruitlens.chain.listing import list_local
from fruitlens.chain.runner import EmbedTask, rewrite_part, run_partition
from fruitlens.embedding.backbone_file import BackboneFile
from fruitlens.embedding.backbones.base import BackboneSpec
from fruitlens.embedding.embedder import Embedder
from fruitlens.storage.dataset import Dataset
from fruitlens.storage.location import Location
from fruitlens.storage.publish import Part, cleanup, publish, staged_parts
from fruitlens.storage.writer import ROW_GROUP_ROWS, STAGING, PartWriter, Target


class FakeBackbone:
    """Deterministic 12-d 'embedding': mean RGB of the four quadrants."""

    def __init__(self, spec=None, path="", threads=1):
        self.calls = 0

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        h, w = batch.shape[1] // 2, batch.shape[2] // 2
        quads = [batch[:, :h, :w], batch[:, :h, w:], batch[:, h:, :w], batch[:, h:, w:]]
        return np.concatenate([q.mean(axis=(1, 2)) for q in quads], axis=1).astype(np.float32)


FAKE = BackboneSpec(
    name="fake",
    description="test",
    file=BackboneFile("none", "", "", ""),
    input_size=(32, 32),
    embedding_dim=12,
    factory=FakeBackbone,
)


def jpeg(color, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_inputs(root):
    (root / "Training" / "Red").mkdir(parents=True)
    (root / "Training" / "Blue").mkdir(parents=True)
    for i in range(5):
        (root / "Training" / "Red" / f"r{i}.jpg").write_bytes(jpeg((200 + i, 10, 10)))
    (root / "Training" / "Blue" / "b.png").write_bytes(jpeg((10, 10, 220)))  # a JPEG named .png: fine
    (root / "Training" / "Blue" / "empty.jpg").write_bytes(b"")
    (root / "Training" / "Blue" / "cut.jpg").write_bytes(jpeg((1, 2, 3), (300, 200))[:400])
    return root


def task_for(tmp_path, run_id="run1", batch_size=2) -> EmbedTask:
    out = Location.of(str(tmp_path / "out"))
    return EmbedTask(
        input=Location.of(str(tmp_path / "in")),
        embeddings=Target(out / "embeddings", out, run_id),
        errors=Target(out / "errors", out, run_id),
        # one interpreter pool per embedder value and process: the path makes each test's its own
        embedder=Embedder(FAKE, file=str(tmp_path)),
        batch_size=batch_size,
        io_threads=2,
    )


def test_one_partition_every_row_lands_once_with_reason_and_detail(tmp_path):
    make_inputs(tmp_path / "in")
    listing = list_local(Location.of(str(tmp_path / "in")))
    task = task_for(tmp_path)
    result = run_partition(task, [r.row() for r in listing.images], partition=3, attempt=0)
    written = {d: (f, n) for d, f, n in result.parts}
    assert written["embeddings"][1] == 6 and written["errors"][1] == 2
    emb = pq.read_table(str(task.embeddings.staging / written["embeddings"][0])).to_pandas()
    err = pq.read_table(str(task.errors.staging / written["errors"][0])).to_pandas()
    assert list(emb.columns) == schemas.EMBEDDINGS.names and list(err.columns) == schemas.ERRORS.names
    assert sorted(os.path.basename(p) for p in emb.path) == ["b.png", "r0.jpg", "r1.jpg", "r2.jpg", "r3.jpg", "r4.jpg"]
    assert dict(zip((os.path.basename(p) for p in err.path), err.reason)) == {
        "empty.jpg": "empty",
        "cut.jpg": "truncated",
    }
    assert all(d and not d.startswith(r) for r, d in zip(err.reason, err.detail))
    red = emb[emb.label == "Red"].embedding.iloc[0]
    assert red[0] > 150 and red[2] < 50  # the fake network saw the decoded red pixels
    ref = {r.path: r for r in listing.images}
    for row in emb.itertuples():  # identity carried through for the next incremental run
        assert (row.size_bytes, row.modified_ns) == (ref[row.path].size_bytes, ref[row.path].modified_ns)
    assert result.reasons == {"empty": 1, "truncated": 1}
    assert result.stats.images == 6 and result.stats.errors == 2
    with task.embedder.interpreter() as backbone:
        assert backbone.calls == 3  # batches of two usable images
    assert written["embeddings"][0].startswith("part-00003-run1-0-")


def test_a_task_is_picklable_and_builds_its_filesystem_lazily(tmp_path):
    task = task_for(tmp_path)
    task.input.fs  # noqa: B018 - built here...
    clone = pickle.loads(pickle.dumps(task))
    assert clone == task and "_fs" not in clone.input.__dict__  # ... and not shipped
    s3 = Location.of("s3://bucket/prefix/")
    assert s3.uri == "s3://bucket/prefix" and (s3 / "a" / "b.jpg").uri == "s3://bucket/prefix/a/b.jpg"
    assert Location.of(f"file://{tmp_path}") == Location.of(str(tmp_path))


def test_non_utf8_name_is_read_and_kept_exactly(tmp_path):
    (tmp_path / "in" / "Kiwi").mkdir(parents=True)
    raw = os.fsencode(str(tmp_path / "in" / "Kiwi")) + b"/kiwi-\xe9\xff.jpg"
    with open(raw, "wb") as f:
        f.write(jpeg((10, 200, 10)))
    listing = list_local(Location.of(str(tmp_path / "in")))
    result = run_partition(task_for(tmp_path), [r.row() for r in listing.images], 0, 0)
    ((name, rows),) = [(f, n) for d, f, n in result.parts if d == "embeddings"]
    emb = pq.read_table(str(task_for(tmp_path).embeddings.staging / name)).to_pandas()
    assert rows == 1 and emb.path_bytes[0] == raw and emb.path[0].endswith("kiwi-\\xe9\\xff.jpg")


def test_file_deleted_after_listing_is_missing(tmp_path):
    make_inputs(tmp_path / "in")
    listing = list_local(Location.of(str(tmp_path / "in")))
    os.remove(listing.images[0].path)
    result = run_partition(task_for(tmp_path), [r.row() for r in listing.images], 0, 0)
    assert result.reasons["missing"] == 1


def test_publish_keeps_only_named_parts_and_links_kept_files(tmp_path):
    out = Location.of(str(tmp_path / "out"))
    first = Target(out / "embeddings", out, "r1")
    table = pq.read_table  # noqa: F841
    a = _write(first, 0, ["a", "b"])
    _write(first, 1, ["dup"], attempt=0)  # an attempt Spark did not accept
    b = _write(first, 1, ["c"], attempt=1)
    manifest = publish(first, staged_parts(first, [a, b]), _schema(), {"v": 1})
    assert manifest.rows == 3 and manifest.params == {"v": 1}
    assert sorted(os.listdir(first.final.path)) == sorted([a[0], b[0], "_SUCCESS"])
    # Next version: keep file a by reference, add a new part; b is dropped.
    second = Target(out / "embeddings", out, "r2")
    c = _write(second, 0, ["d"])
    inode = os.stat(os.path.join(first.final.path, a[0])).st_ino
    publish(second, [Part(a[0], 2, out / "embeddings" / a[0]), *staged_parts(second, [c])], _schema())
    assert sorted(os.listdir(second.final.path)) == sorted([a[0], c[0], "_SUCCESS"])
    assert os.stat(os.path.join(second.final.path, a[0])).st_ino == inode  # a hard link, not a copy
    published = Dataset.at(out / "embeddings")
    assert published.rows == 3
    assert [f.name for f in published.files] == sorted([a[0], c[0]])
    cleanup(out, "r1", "r2")
    assert not os.path.exists(os.path.join(out.path, STAGING))


def test_rewrite_drops_only_the_named_rows(tmp_path):
    out = Location.of(str(tmp_path / "out"))
    first = Target(out / "embeddings", out, "r1")
    name, _ = _write(first, 0, ["a", "b", "c", "d"])
    second = Target(out / "embeddings", out, "r2")
    new_name, rows = rewrite_part(first.staging / name, second, _schema(), [1, 3], 7, 0)
    assert rows == 2 and pq.read_table(str(second.staging / new_name)).column("path").to_pylist() == ["a", "c"]


def test_a_part_cut_short_is_not_a_valid_parquet_file(tmp_path):
    """Resume relies on this: a task killed mid-write leaves no file a reader accepts."""
    out = Location.of(str(tmp_path / "out"))
    target = Target(out / "embeddings", out, "r1")
    writer = PartWriter(target, _schema(), 0, 0)
    writer.write(_batch(["a", "b"]))
    assert not (target.staging / writer.name).exists()  # rows wait for a full row group in memory
    writer.write(_batch([f"p{i}" for i in range(ROW_GROUP_ROWS)]))  # a row group: the file starts
    writer._file.flush()
    with pytest.raises(pa.ArrowInvalid):  # no footer yet
        pq.read_metadata(str(target.staging / writer.name))


def _schema():
    return schemas.EMBEDDINGS


def _batch(paths):
    from fruitlens.chain.mapper import Record
    from fruitlens.chain.runner import embeddings_batch

    return embeddings_batch(
        [
            Record(
                schemas.ImageRef(path=p, label="x", split=None, size_bytes=1, modified_ns=1),
                embedding=np.ones(4, np.float32),
            )
            for p in paths
        ]
    )


def _write(target, partition, paths, attempt=0):
    writer = PartWriter(target, _schema(), partition, attempt)
    writer.write(_batch(paths))
    return writer.close()


def test_manifest_is_json_a_reader_can_follow(tmp_path):
    out = Location.of(str(tmp_path / "out"))
    target = Target(out / "errors", out, "r9")
    publish(target, [], schemas.ERRORS)  # an empty dataset still carries its schema
    data = json.loads((tmp_path / "out" / "errors" / "_SUCCESS").read_text())
    assert data["rows"] == 0 and data["run_id"] == "r9" and len(data["files"]) == 1
    assert [c["name"] for c in data["columns"]] == schemas.ERRORS.names
    assert pq.read_table(str(tmp_path / "out" / "errors")).schema.names == schemas.ERRORS.names


def test_tasks_are_about_the_asked_size_in_whole_waves_of_the_slots():
    from fruitlens.chain.featurize import task_count

    assert task_count(90_000, 1024, 2) == 88  # 1,023 images each, 44 per slot
    assert task_count(3_000, 1024, 2) == 4  # not 3, which would leave one slot idle for a third
    assert task_count(90_000, 1024, 16) == 96  # 6 waves of 16 executors' slots
    assert task_count(5, 1024, 2) == 2 and task_count(1, 1024, 8) == 1  # never more tasks than images
