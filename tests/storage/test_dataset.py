"""The one dataset reader (`storage.dataset.Dataset`) on datasets the real writer and publisher
made: published, written by another tool (no manifest), one file, empty, missing, a folder
published whole, on local disk and on an S3 API server (moto); and the Spark DataFrame of each
way Spark reads (its JVM locally, the tasks for s3://)."""

from __future__ import annotations

import os

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruitlens import FruitlensError
from fruitlens.spark.datasets import read_dataframe
from fruitlens.storage.dataset import Dataset
from fruitlens.storage.location import Location
from fruitlens.storage.publish import publish, publish_tree, staged_parts
from fruitlens.storage.writer import PartWriter, Target

SCHEMA = pa.schema(
    [pa.field("path", pa.string()), pa.field("label", pa.string()), pa.field("embedding", pa.list_(pa.float32()))]
)
PARAMS = {"backbone": "fake", "model_sha256": "0" * 64}
BUCKET = "dataset-test"


def rows(paths: list[str]) -> pa.Table:
    return pa.table(
        {
            "path": paths,
            "label": [p.split("/")[0] for p in paths],
            "embedding": [[float(i), 1.0] for i in range(len(paths))],
        },
        schema=SCHEMA,
    )


def published(out: Location, parts: list[list[str]], run: str = "r1") -> Location:
    """OUTPUT/embeddings published from one part file per list of paths, plus an attempt Spark did
    not accept (left in staging, never published)."""
    target = Target(out / "embeddings", out, run)
    written = []
    for i, paths in enumerate(parts):
        part = PartWriter(target, SCHEMA, i, 0)
        part.write(rows(paths))
        written.append(part.close())
    stray = PartWriter(target, SCHEMA, 0, 1)
    stray.write(rows(["stray/x.jpg"]))
    stray.close()
    publish(target, staged_parts(target, written), SCHEMA, PARAMS)
    return target.final


def test_a_published_dataset_reads_exactly_what_its_manifest_lists(tmp_path):
    where = published(Location.of(str(tmp_path / "out")), [["apple/1.jpg", "apple/2.jpg"], ["pear/1.jpg"]])
    # a file dropped in later by hand is not part of the published version
    pq.write_table(rows(["intruder/1.jpg"]), os.path.join(where.path, "part-99999-manual.parquet"))
    dataset = Dataset.at(where)
    assert dataset.published and dataset.exists
    assert dataset.params == PARAMS and dataset.manifest.run_id == "r1"
    assert dataset.rows == 3
    assert [f.name for f in dataset.files] == sorted(f["path"] for f in dataset.manifest.files)
    assert dataset.schema == SCHEMA
    table = dataset.table()
    assert sorted(table.column("path").to_pylist()) == ["apple/1.jpg", "apple/2.jpg", "pear/1.jpg"]
    # columns: those asked for that the files have, a missing one left out
    assert dataset.table(["path", "no_such_column"]).column_names == ["path"]
    assert [(f.name, t.num_rows) for f, t in dataset.tables(["label"])] == [
        (f.name, n) for f, n in zip(dataset.files, (2, 1))
    ]
    assert [b.num_rows for b in dataset.batches(["path"], batch_size=1)] == [1, 1, 1]
    assert dataset.arrow_dataset().to_table().sort_by("path").equals(table.sort_by("path"))
    # a path string opens the same dataset
    assert Dataset.at(str(tmp_path / "out" / "embeddings")).files == dataset.files


def test_a_dataset_another_tool_wrote_reads_every_parquet_file_outside_hidden_folders(tmp_path):
    root = tmp_path / "theirs"
    for name, paths in (
        ("a/part-0.parquet", ["apple/1.jpg"]),
        ("b/part-1.parquet", ["pear/1.jpg", "pear/2.jpg"]),
        ("_temporary/part-2.parquet", ["half/written.jpg"]),
        (".hidden/part-3.parquet", ["x/y.jpg"]),
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows(paths), root / name)
    dataset = Dataset.at(str(root))
    assert not dataset.published and dataset.exists
    assert dataset.manifest is None and dataset.params == {}
    assert [f.uri for f in dataset.files] == [str(root / "a/part-0.parquet"), str(root / "b/part-1.parquet")]
    assert dataset.rows == 3  # counted from the files' footers
    assert sorted(dataset.table(["path"]).column("path").to_pylist()) == ["apple/1.jpg", "pear/1.jpg", "pear/2.jpg"]


def test_one_parquet_file_is_a_dataset(tmp_path):
    pq.write_table(rows(["apple/1.jpg", "apple/2.jpg"]), tmp_path / "one.parquet")
    dataset = Dataset.at(str(tmp_path / "one.parquet"))
    assert dataset.exists and not dataset.published
    assert [f.uri for f in dataset.files] == [str(tmp_path / "one.parquet")]
    assert dataset.rows == 2 and dataset.schema == SCHEMA
    assert dataset.table(["path"]).column("path").to_pylist() == ["apple/1.jpg", "apple/2.jpg"]


def test_an_empty_published_dataset_keeps_its_schema(tmp_path):
    out = Location.of(str(tmp_path / "out"))
    target = Target(out / "errors", out, "r1")
    publish(target, [], SCHEMA, PARAMS)
    dataset = Dataset.at(target.final)
    assert dataset.published and dataset.exists and dataset.rows == 0
    assert dataset.schema == SCHEMA
    table = dataset.table()
    assert table.num_rows == 0 and table.schema == SCHEMA


def test_a_missing_dataset_says_so_in_one_line(tmp_path):
    dataset = Dataset.at(str(tmp_path / "nothing-here"))
    assert not dataset.exists and not dataset.published
    assert dataset.files == [] and dataset.params == {} and dataset.rows == 0
    assert dataset.table().num_rows == 0  # callers say what was expected (e.g. "holds no embeddings")
    for read in (lambda: dataset.schema, dataset.arrow_dataset, lambda: read_dataframe(None, dataset)):
        with pytest.raises(FruitlensError, match=f"^no Parquet files in {tmp_path / 'nothing-here'}$"):
            read()


def test_a_folder_published_whole_gives_its_manifest_and_files(tmp_path):
    folder = tmp_path / "saved"
    (folder / "stages").mkdir(parents=True)
    (folder / "metadata.json").write_text("{}")
    (folder / "stages" / "data.bin").write_bytes(b"1234")
    out = Location.of(str(tmp_path / "out"))
    publish_tree(str(folder), Target(out / "pca", out, "r1"), {"fit_on": "train"})
    dataset = Dataset.at(out / "pca")
    assert dataset.published and dataset.manifest.format == "tree"
    assert dataset.params == {"fit_on": "train"}
    assert sorted(f.name for f in dataset.files) == ["data.bin", "metadata.json"]


@pytest.fixture(scope="module")
def bucket(s3_server):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return Location.of(f"s3://{BUCKET}/out")


def test_a_dataset_on_s3_reads_the_same(bucket):
    where = published(bucket, [["apple/1.jpg"], ["pear/1.jpg", "pear/2.jpg"]])
    dataset = Dataset.at(f"s3://{BUCKET}/out/embeddings")
    assert dataset.published and dataset.rows == 3 and dataset.params == PARAMS
    assert all(f.uri.startswith(where.uri + "/part-") for f in dataset.files)
    expected = ["apple/1.jpg", "pear/1.jpg", "pear/2.jpg"]
    assert sorted(dataset.table(["path"]).column("path").to_pylist()) == expected
    assert sorted(dataset.arrow_dataset().to_table(columns=["path"]).column("path").to_pylist()) == expected
    assert not Dataset.at(f"s3://{BUCKET}/out/nothing").exists


def test_spark_reads_exactly_the_published_files_locally_and_from_s3(spark, tmp_path, bucket):
    local = published(Location.of(str(tmp_path / "out")), [["apple/1.jpg", "apple/2.jpg"], ["pear/1.jpg"]])
    pq.write_table(rows(["intruder/1.jpg"]), os.path.join(local.path, "part-99999-manual.parquet"))
    remote = published(bucket / "spark", [["apple/1.jpg", "apple/2.jpg"], ["pear/1.jpg"]])
    for where in (local, remote):  # Spark's JVM reads local files; s3:// goes through the tasks (no S3 connector)
        df = read_dataframe(spark, Dataset.at(where))
        assert df.columns == ["path", "label", "embedding"]
        got = sorted((r["path"], r["label"], list(r["embedding"])) for r in df.collect())
        assert got == [
            ("apple/1.jpg", "apple", [0.0, 1.0]),
            ("apple/2.jpg", "apple", [1.0, 1.0]),
            ("pear/1.jpg", "pear", [0.0, 1.0]),
        ]
