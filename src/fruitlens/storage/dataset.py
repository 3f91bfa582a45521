"""One reader for every fruitlens dataset: `Dataset.at(location)` resolves once what is there
(its manifest, its files) and reads it as pyarrow tables or batches or a `pyarrow.dataset`; its Spark
DataFrame is `spark.datasets.read_dataframe(spark, dataset)` (Spark at the edge: storage imports no
Spark). Every module that reads a dataset goes through it; writing stays with `writer` and `publish`.

`Dataset` says what a reader can ask; `ManifestParquet` is today's format (Parquet part files and
the `_SUCCESS` manifest that `publish` writes, or the Parquet files of a dataset another tool
wrote, or one Parquet file). Another table format (Delta Lake: docs/architecture.md) would be one
more subclass, chosen in `Dataset.at`.

A folder published whole (manifest format `tree`: a saved Spark ML model, a model folder, the
saved index) opens the same way for its `manifest`, `params` and `files`; it has no rows to read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from functools import cached_property

import pyarrow as pa
import pyarrow.parquet as pq

from .. import FruitlensError
from .location import Location, S3Options
from .manifest import Manifest, read_manifest


class Dataset(ABC):
    """A dataset at a location, resolved once. `columns` arguments are lenient: each file's rows
    come with those of the named columns it has (a column it lacks is left out, not an error)."""

    def __init__(self, location: Location):
        self.location = location

    @staticmethod
    def at(where: Location | str, s3: S3Options | None = None) -> Dataset:
        """The dataset at `where` (a Location, path or URI); nothing is read until asked."""
        return ManifestParquet(Location.of(where, s3))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location.uri!r})"

    # -- what is there ----------------------------------------------------------------------------
    @property
    @abstractmethod
    def manifest(self) -> Manifest | None:
        """The record of the version readers see, or None (not published by fruitlens)."""

    @property
    @abstractmethod
    def files(self) -> list[Location]:
        """The data files of the version readers see, in order."""

    @property
    def published(self) -> bool:
        """Published by fruitlens (atomically, with its parameters)."""
        return self.manifest is not None

    @property
    def exists(self) -> bool:
        """A dataset is here: published, or at least one data file."""
        return self.published or bool(self.files)

    @property
    def params(self) -> dict:
        """What the rows depend on (for embeddings: the backbone, its file's sha256, sizes); {} when unknown."""
        return dict(self.manifest.params) if self.manifest is not None else {}

    @property
    @abstractmethod
    def rows(self) -> int:
        """Rows in it."""

    @property
    @abstractmethod
    def schema(self) -> pa.Schema:
        """Its Arrow schema; FruitlensError when there is no data file."""

    # -- reading ----------------------------------------------------------------------------------
    @abstractmethod
    def tables(self, columns: Sequence[str] | None = None) -> Iterator[tuple[Location, pa.Table]]:
        """Each data file's rows as a table, with the file (for messages), one file in memory at a time."""

    @abstractmethod
    def batches(self, columns: Sequence[str] | None = None, batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
        """Every row in record batches of at most `batch_size` rows, streamed."""

    def table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Every row in one table (files with fewer columns padded with nulls); an empty table with
        no columns when there is no data file."""
        tables = [t for _, t in self.tables(columns)]
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})

    @abstractmethod
    def arrow_dataset(self):
        """A `pyarrow.dataset.Dataset` over exactly the files readers see (filters, projections, scanners)."""


class ManifestParquet(Dataset):
    """Parquet files, with the `_SUCCESS` manifest `publish` writes (the files it lists), or
    without (every *.parquet below the folder outside `_` and `.` folders: a dataset written by
    another tool), or one Parquet file."""

    @cached_property
    def manifest(self) -> Manifest | None:
        return read_manifest(self.location)

    @cached_property
    def files(self) -> list[Location]:
        where = self.location
        fs, path = where.fs, where.path
        if fs.isfile(path):
            return [where]
        if self.manifest is not None:
            return [where / f["path"] for f in self.manifest.files]
        found = sorted(
            p
            for p in fs.find(path)
            if p.endswith(".parquet") and "/_" not in p[len(path) :] and "/." not in p[len(path) :]
        )
        return [where.child(p) for p in found]

    @cached_property
    def rows(self) -> int:
        """The manifest's count, else the files' footers'."""
        if self.manifest is not None:
            return self.manifest.rows
        total = 0
        for f in self.files:
            with f.open("rb") as fh:
                total += pq.ParquetFile(fh).metadata.num_rows
        return total

    @cached_property
    def schema(self) -> pa.Schema:
        first = self._first_file()
        with first.open("rb") as f:
            return pq.read_schema(f)

    def _first_file(self) -> Location:
        if not self.files:
            raise FruitlensError(f"no Parquet files in {self.location.uri}")
        return self.files[0]

    def tables(self, columns: Sequence[str] | None = None) -> Iterator[tuple[Location, pa.Table]]:
        for f in self.files:
            with f.open("rb") as fh:
                pf = pq.ParquetFile(fh)
                yield f, pf.read(columns=_present(columns, pf.schema_arrow.names))

    def batches(self, columns: Sequence[str] | None = None, batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
        for f in self.files:
            with f.open("rb") as fh:
                pf = pq.ParquetFile(fh)
                yield from pf.iter_batches(batch_size=batch_size, columns=_present(columns, pf.schema_arrow.names))

    def arrow_dataset(self):
        import pyarrow.dataset as ds

        self._first_file()
        return ds.dataset([f.path for f in self.files], format="parquet", filesystem=self.location.fs)


def _present(columns: Sequence[str] | None, names: list[str]) -> list[str] | None:
    return None if columns is None else [c for c in columns if c in names]
