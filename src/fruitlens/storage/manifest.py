"""The `_SUCCESS` manifest of a published dataset: written and read here and nowhere else.

A manifest is JSON: the format (`parquet` for a dataset, `tree` for a folder such as a saved
Spark ML model), the run that published it, every file with its row count (or size), the total
row count, the columns, and the parameters the rows depend on (`params`: for embeddings, the
backbone, the model's sha256, the input size and --max-pixels), so an incremental run knows
whether the rows it would keep are still valid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .location import Location

MANIFEST = "_SUCCESS"


@dataclass
class Manifest:
    format: str  # "parquet" | "tree"
    run_id: str
    files: list[dict]  # {"path": name relative to the dataset, "rows": n} (tree: "bytes" instead of "rows")
    columns: list[dict] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(f.get("rows", 0) for f in self.files)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"format": self.format, "run_id": self.run_id}
        if self.format == "parquet":
            out["rows"] = self.rows
        out["files"] = self.files
        if self.columns:
            out["columns"] = self.columns
        if self.params:
            out["params"] = self.params
        return out

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        return cls(
            format=data.get("format", "parquet"),
            run_id=str(data.get("run_id", "")),
            files=list(data["files"]),
            columns=list(data.get("columns", [])),
            params=dict(data.get("params", {})),
        )

    @classmethod
    def for_parquet(cls, run_id: str, parts: list[tuple[str, int]], schema: pa.Schema, params: dict | None = None):
        return cls(
            "parquet",
            run_id,
            [{"path": name, "rows": rows} for name, rows in sorted(parts)],
            [{"name": f.name, "type": str(f.type)} for f in schema],
            dict(params or {}),
        )


def manifest_location(dataset: Location) -> Location:
    return dataset / MANIFEST


def read_manifest(dataset: Location) -> Manifest | None:
    """The dataset's manifest, or None when there is none (or it is not one of ours)."""
    try:
        return Manifest.from_json(json.loads(manifest_location(dataset).read_bytes()))
    except (FileNotFoundError, NotADirectoryError, KeyError, ValueError, TypeError):
        return None


def write_manifest(folder: Location, manifest: Manifest) -> None:
    manifest_location(folder).write_json(manifest.to_json())
