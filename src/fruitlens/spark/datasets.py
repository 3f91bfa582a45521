"""Spark <-> datasets. Reads natively where Spark's JVM can reach the store (local files; s3:// on
EMR through EMRFS), else through the tasks with pyarrow + fsspec. Writes always go through the
tasks (staged part files), then `publish` (manifest, atomic for readers)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from .. import FruitlensError, schemas
from ..storage.location import Location
from ..storage.manifest import dataset_files
from ..storage.publish import publish, staged_parts
from ..storage.writer import PartWriter, Target


def jvm_can_read(spark, where: Location) -> bool:
    if where.is_local:
        return True
    try:
        jvm = spark.sparkContext._jvm
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(where.scheme, spark.sparkContext._jsc.hadoopConfiguration())
        return True
    except Exception:  # noqa: BLE001 - "No FileSystem for scheme"
        return False


def read_parquet(spark, where: Location):
    """A dataset as a DataFrame: exactly the files its manifest lists (or every Parquet file of a
    dataset written by another tool)."""
    files = dataset_files(where)
    if not files:
        raise FruitlensError(f"no Parquet files in {where.uri}")
    if jvm_can_read(spark, where):
        return spark.read.parquet(*[f.spark_uri for f in files])
    with files[0].open("rb") as f:
        arrow_schema = pq.read_schema(f)

    def read_files(batches):
        for batch in batches:
            for i in batch.column(0).to_pylist():
                with files[i].open("rb") as f:
                    yield from pq.ParquetFile(f).iter_batches(batch_size=4096)

    index = spark.createDataFrame([(i,) for i in range(len(files))], "i int").repartition(min(len(files), 64) or 1)
    return index.mapInArrow(read_files, schemas.spark_type(arrow_schema))


def write_dataframe(df, target: Target, arrow_schema: pa.Schema, params: dict | None = None):
    """Write `df` (columns matching `arrow_schema`) as the dataset `target`; returns the manifest."""
    from pyspark import TaskContext

    def write_partition(batches):
        context = TaskContext.get()
        part = PartWriter(target, arrow_schema, context.partitionId(), context.attemptNumber())
        for batch in batches:
            if batch.num_rows:
                part.write(pa.Table.from_batches([batch]).cast(arrow_schema))
        written = part.close()
        yield pa.RecordBatch.from_pydict(
            {"file": [written[0]] if written else [], "rows": [written[1]] if written else []},
            schema=pa.schema([("file", pa.string()), ("rows", pa.int64())]),
        )

    parts = df.mapInArrow(write_partition, "file string, rows long").collect()
    return publish(target, staged_parts(target, [(p["file"], p["rows"]) for p in parts]), arrow_schema, params)
