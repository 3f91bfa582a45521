"""Ships fruitlens itself to the executors of a cluster (a zip on the Python path of every task),
so workers need only the third-party dependencies, not fruitlens installed."""

from __future__ import annotations

import os
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def package_zip() -> str:
    """A zip of the installed fruitlens package (built once per driver process)."""
    root = Path(__file__).resolve().parents[1]  # the fruitlens package (this module is in fruitlens/spark/)
    fd, path = tempfile.mkstemp(prefix="fruitlens-", suffix=".zip")
    os.close(fd)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(root.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                zf.write(file, Path("fruitlens") / file.relative_to(root))
    return path


def ship_to_executors(spark) -> None:
    """Add the package zip to the job unless executors share this process (local mode)."""
    master = spark.sparkContext.master or ""
    if not master.startswith("local"):
        spark.sparkContext.addPyFile(package_zip())
