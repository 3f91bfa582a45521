"""The Spark session: local mode by default, any master (spark://, yarn) or spark-submit's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources

from .. import FruitlensError
from ..config import SparkConfig


def check_java() -> None:
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java or not os.path.exists(java):
        raise FruitlensError(
            "Spark needs Java 17 or newer and none was found: install a JDK "
            "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FruitlensError(f"cannot run {java}: {exc}") from None
    major = _java_major(out)
    if major is not None and major < 17:
        raise FruitlensError(f"Spark needs Java 17 or newer, found Java {major} at {java}")


def _java_major(version_text: str) -> int | None:
    import re

    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


def get_session(cfg: SparkConfig):
    """A SparkSession. Under spark-submit the submitted master and settings win."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # spark-submit starts the JVM first and hands Python its gateway: its --master and conf win.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if not submitted:
        check_java()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    log4j = resources.files("fruitlens.spark") / "log4j2.properties"
    builder = SparkSession.builder.appName(cfg.app_name)
    if not submitted:
        builder = builder.master(cfg.master).config("spark.driver.memory", cfg.driver_memory)
    java_opts = f"-Dlog4j2.configurationFile={log4j}"
    builder = (
        # When the driver JVM (in local mode also the executor) only plans and moves small batches,
        # the C1 compiler alone saves the ~11 CPU-seconds C2 spends compiling Spark on the two
        # cores inference needs (featurize 10k: JVM 25 -> 13 CPU-s; reduce not slower). Not for
        # train: Spark ML's optimizers run in the JVM and need C2 (SparkConfig.quick_jit).
        builder.config("spark.driver.extraJavaOptions",
                       f"-XX:TieredStopAtLevel=1 {java_opts}" if cfg.quick_jit else java_opts)
        .config("spark.executor.extraJavaOptions", java_opts)
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.python.worker.reuse", "true")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.sql.shuffle.partitions", "8")
    )
    for key, value in cfg.extra_conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM failed to start: say so in one line
        raise FruitlensError(f"cannot start Spark ({cfg.master}): {str(exc).splitlines()[0]}") from None
    spark.sparkContext.setLogLevel("WARN")
    from .packaging import ship_to_executors

    ship_to_executors(spark)
    return spark


def versions(spark) -> dict:
    import platform

    import pyspark

    return {
        "spark": spark.version,
        "pyspark": pyspark.__version__,
        "python": platform.python_version(),
        "java": spark.sparkContext._jvm.System.getProperty("java.version"),
    }
