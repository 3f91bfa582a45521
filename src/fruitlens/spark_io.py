"""Spark <-> datasets. Reads natively where Spark's JVM can reach the store (local files; s3:// on
EMR through EMRFS), else through the tasks with pyarrow + fsspec. Writes always go through the
tasks and `writer` (staged part files, published with a `_SUCCESS` manifest)."""

from __future__ import annotations

from . import FruitlensError
from .storage import configure, filesystem, is_local, join, s3_options, scheme, spark_uri
from .writer import MANIFEST, PartWriter, Target, publish


def jvm_can_read(spark, uri: str) -> bool:
    if is_local(uri):
        return True
    try:
        jvm = spark.sparkContext._jvm
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme(uri), spark.sparkContext._jsc.hadoopConfiguration())
        return True
    except Exception:  # noqa: BLE001 - "No FileSystem for scheme"
        return False


def dataset_files(uri: str) -> list[str]:
    """Files of a dataset: those its `_SUCCESS` manifest lists, else every *.parquet under it."""
    fs, path = filesystem(uri)
    manifest = join(uri, MANIFEST)
    if fs.isfile(path):
        return [uri]
    try:
        import json

        listed = json.loads(fs.cat_file(filesystem(manifest)[1]))["files"]
        return [join(uri, f["path"]) for f in listed]
    except (FileNotFoundError, KeyError, ValueError):
        pass
    found = sorted(p for p in fs.find(path) if p.endswith(".parquet") and "/_" not in p[len(path):] and "/." not in p[len(path):])
    return [p if is_local(uri) else fs.unstrip_protocol(p) for p in found]


def read_parquet(spark, uri: str):
    if jvm_can_read(spark, uri):
        return spark.read.parquet(spark_uri(uri))
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import from_arrow_schema

    files = dataset_files(uri)
    if not files:
        raise FruitlensError(f"no Parquet files in {uri}")
    fs, first = filesystem(files[0])
    with fs.open(first, "rb") as f:
        arrow_schema = pq.read_schema(f)
    options = s3_options()

    def read_files(batches):
        configure(options)
        for batch in batches:
            for name in batch.column(0).to_pylist():
                file_fs, path = filesystem(name)
                with file_fs.open(path, "rb") as f:
                    yield from pq.ParquetFile(f).iter_batches(batch_size=4096)

    listing = spark.createDataFrame([(f,) for f in files], "file string").repartition(min(len(files), 64) or 1)
    return listing.mapInArrow(read_files, from_arrow_schema(arrow_schema))


def write_dataframe(df, target: Target, arrow_schema) -> dict:
    """Write `df` (columns matching `arrow_schema`) as the dataset `target`; returns the manifest."""
    import pyarrow as pa
    from pyspark import TaskContext

    options = s3_options()

    def write_partition(batches):
        configure(options)
        context = TaskContext.get()
        part = PartWriter(target, arrow_schema, context.partitionId(), context.attemptNumber())
        for batch in batches:
            part.write(pa.Table.from_batches([batch]).cast(arrow_schema).to_batches()[0] if batch.num_rows else batch)
        written = part.close()
        yield pa.RecordBatch.from_pydict(
            {"file": [written[0]] if written else [], "rows": [written[1]] if written else []},
            schema=pa.schema([("file", pa.string()), ("rows", pa.int64())]),
        )

    parts = df.mapInArrow(write_partition, "file string, rows long").collect()
    return publish(target, [(p["file"], p["rows"]) for p in parts], arrow_schema)
