"""Writer: Parquet part files written by the Spark tasks themselves (pyarrow + fsspec) into the
run's staging area, `OUTPUT/_staging/<run id>/<dataset>/`. Publishing them is `publish`'s job.

Part names carry the partition, the run id, the task attempt and a random suffix, so attempts and
runs never collide, and a published file keeps its name in later versions of the dataset.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from .location import Location

STAGING = "_staging"
# Rows per Parquet row group: batches are buffered to this many (16-row groups cost a third more
# write time per row and made files 40% larger: docs/benchmarks.md, Performance II).
ROW_GROUP_ROWS = 256


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Target:
    """One dataset to publish at `final` (e.g. OUTPUT/embeddings), staged under
    OUTPUT/_staging/<run>/<name>."""

    final: Location
    output: Location
    run_id: str

    @property
    def staging_root(self) -> Location:
        return self.output / STAGING / self.run_id

    @property
    def staging(self) -> Location:
        return self.staging_root / self.final.name


class PartWriter:
    """Streams record batches of one task into one Parquet file (created on the first row).

    A file is complete once `close` returns: Parquet writes its footer last, so a task killed
    mid-write leaves a file no reader accepts (resume relies on this)."""

    def __init__(self, target: Target, schema: pa.Schema, partition: int, attempt: int):
        self.target, self.schema = target, schema
        self.name = f"part-{partition:05d}-{target.run_id}-{attempt}-{uuid.uuid4().hex[:6]}.parquet"
        self.rows = 0
        self._file: BinaryIO | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        self._pending.append(batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch]))
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        if self._writer is None:
            self._file = (self.target.staging / self.name).open("wb")
            self._writer = pq.ParquetWriter(self._file, self.schema, compression="zstd")
        self._writer.write_table(
            pa.concat_tables(self._pending), row_group_size=max(ROW_GROUP_ROWS, self._pending_rows)
        )
        self._pending, self._pending_rows = [], 0

    def close(self) -> tuple[str, int] | None:
        self._flush()
        if self._writer is None or self._file is None:  # nothing written (both are set together)
            return None
        self._writer.close()
        self._file.close()
        return self.name, self.rows
