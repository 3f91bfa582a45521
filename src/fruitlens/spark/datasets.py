"""Spark <-> datasets. A `storage.dataset.Dataset` as a DataFrame (`read_dataframe`): read natively
where Spark's JVM can reach the store (local files; s3:// on EMR through EMRFS), else through the
tasks with pyarrow + fsspec. Writes always go through the tasks (staged part files), then `publish`
(manifest, atomic for readers). `spark_type`: an Arrow schema as Spark's."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from .. import FruitlensError
from ..storage.dataset import Dataset
from ..storage.location import Location
from ..storage.publish import publish, staged_parts
from ..storage.writer import PartWriter, Target


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


def spark_type(schema: pa.Schema):
    """The Spark StructType of an Arrow schema (for mapInArrow and createDataFrame)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def read_dataframe(spark, dataset: Dataset):
    """`dataset`'s rows as a DataFrame of `spark`, read by Spark's JVM where it reaches the store
    (local files; s3:// on EMR through EMRFS), else through the tasks with pyarrow + fsspec (PyPI's
    PySpark has no S3 connector)."""
    files = dataset.files
    if not files:
        raise FruitlensError(f"no Parquet files in {dataset.location.uri}")
    if jvm_can_read(spark, dataset.location):
        return spark.read.parquet(*[f.spark_uri for f in files])
    arrow_schema = dataset.schema

    def read_files(batches):
        for batch in batches:
            for i in batch.column(0).to_pylist():
                with files[i].open("rb") as f:
                    yield from pq.ParquetFile(f).iter_batches(batch_size=4096)

    index = spark.createDataFrame([(i,) for i in range(len(files))], "i int").repartition(min(len(files), 64) or 1)
    return index.mapInArrow(read_files, spark_type(arrow_schema))


def jvm_can_read(spark, where: Location) -> bool:
    """Whether Spark's JVM (Hadoop's file systems) reaches `where`'s store: always for local
    files; s3:// only where a connector is installed (EMR's EMRFS)."""
    if where.is_local:
        return True
    try:
        context = spark.sparkContext
        context._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(
            where.scheme, context._jsc.hadoopConfiguration()
        )
        return True
    except Exception:  # noqa: BLE001 - "No FileSystem for scheme"
        return False
