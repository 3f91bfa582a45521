"""Spark -> datasets: writes always go through the tasks (staged part files), then `publish`
(manifest, atomic for readers). Reading a dataset into Spark is `storage.dataset.Dataset.dataframe`."""

from __future__ import annotations

import pyarrow as pa

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
