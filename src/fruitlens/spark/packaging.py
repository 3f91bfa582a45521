"""Ships fruitlens itself to the executors of a cluster (a zip on the Python path of every task),
so workers need only the third-party dependencies, not fruitlens installed."""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from functools import lru_cache
from importlib import resources

from .. import FruitlensError


def _files(folder, prefix: str):
    """(archive name, Traversable) of every file under `folder`: a directory or a folder inside a
    zip (fruitlens imported from --py-files), without bytecode."""
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__" or entry.name.endswith(".pyc"):
            continue
        name = f"{prefix}/{entry.name}"
        if entry.is_dir():
            yield from _files(entry, name)
        elif entry.is_file():
            yield name, entry


@lru_cache(maxsize=1)
def package_zip() -> str:
    """A zip of the fruitlens package as this process imports it (from its folder, or from the zip
    it was itself imported from), built once per driver process."""
    fd, path = tempfile.mkstemp(prefix="fruitlens-", suffix=".zip")
    os.close(fd)
    count = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, entry in _files(resources.files("fruitlens"), "fruitlens"):
            zf.writestr(name, entry.read_bytes())
            count += 1
    with zipfile.ZipFile(path) as zf:
        if "fruitlens/__init__.py" not in zf.namelist() or count < 10:
            raise FruitlensError(f"cannot package fruitlens for the executors: {count} files found")
    return path


def imported_from_archive() -> str | None:
    """The zip fruitlens was imported from (--py-files, PYTHONPATH), or None for a folder."""
    archive = getattr(getattr(sys.modules["fruitlens"], "__loader__", None), "archive", None)
    return str(archive) if archive else None


def ship_to_executors(spark) -> None:
    """Add the package zip to the job unless executors share this process (local mode) or already
    get fruitlens from spark-submit's --py-files (the zip this process imported it from)."""
    sc = spark.sparkContext
    if (sc.master or "").startswith("local"):
        return
    archive = imported_from_archive()
    if archive:
        submitted = ",".join(sc.getConf().get(k, "") for k in ("spark.submit.pyFiles", "spark.yarn.dist.pyFiles"))
        names = {os.path.basename(p) for p in submitted.split(",") if p}
        if os.path.basename(archive) in names:
            return
    sc.addPyFile(package_zip())
