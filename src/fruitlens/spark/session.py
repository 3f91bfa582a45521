"""The Spark session: local mode by default, any master (spark://, yarn) or spark-submit's."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from .. import FruitlensError
from ..config import SparkConfig
from .packaging import ship_to_executors


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
    # Native BLAS on one thread per task, as Spark's linear algebra guide recommends: every task slot
    # already has its core, and OpenBLAS's own threads fighting for them made Spark ML's iterations
    # 1.3-1.7x slower here (docs/benchmarks.md, "Train"). Inherited by the local JVM and its Python
    # workers; executors elsewhere get it through spark.executorEnv unless you set it.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    builder = SparkSession.builder.appName(cfg.app_name)
    if not submitted:
        # The driver JVM starts here, so its options are fruitlens's to add to; under spark-submit it
        # is already running with the cluster's. Executors always keep the cluster's own options
        # (EMR puts its JVM settings and logging in spark.executor.extraJavaOptions): fruitlens sets
        # none, and in local mode the executor is the driver JVM.
        builder = (
            builder.master(cfg.master)
            .config("spark.driver.memory", cfg.driver_memory)
            .config("spark.driver.extraJavaOptions", driver_java_options(cfg))
        )
    builder = (
        builder.config("spark.ui.showConsoleProgress", "false")
        .config("spark.python.worker.reuse", "true")
        .config("spark.sql.parquet.compression.codec", "zstd")
    )
    if "spark.executorEnv.OPENBLAS_NUM_THREADS" not in cfg.extra_conf:
        builder = builder.config("spark.executorEnv.OPENBLAS_NUM_THREADS", os.environ["OPENBLAS_NUM_THREADS"])
    for key, value in cfg.extra_conf.items():
        if key == "spark.driver.extraJavaOptions" and not submitted:
            continue  # already in driver_java_options
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - the JVM failed to start: say so in one line
        raise FruitlensError(f"cannot start Spark ({cfg.master}): {str(exc).splitlines()[0]}") from None
    spark.sparkContext.setLogLevel("WARN")
    sc = spark.sparkContext
    conf = dict(sc.getConf().getAll())
    if "spark.sql.shuffle.partitions" not in conf:  # set by you (--conf, spark-defaults, the cluster): kept
        spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions(sc.master, conf, sc.defaultParallelism)))
    # Cached rows here can be embeddings (reduce caches them as 1,992 doubles: 16 KB a row): Spark's
    # default cache batch of 10,000 rows is a 160 MB buffer per task, grown by doubling, and a 2 GB
    # heap runs out; 512 rows: 8 MB.
    if CACHE_BATCH_KEY not in conf:
        spark.conf.set(CACHE_BATCH_KEY, str(CACHE_BATCH_ROWS))

    ship_to_executors(spark)
    return spark


CACHE_BATCH_KEY = "spark.sql.inMemoryColumnarStorage.batchSize"
CACHE_BATCH_ROWS = 512


def spark_defaults() -> dict[str, str]:
    """$SPARK_CONF_DIR/spark-defaults.conf (else $SPARK_HOME/conf's), as spark-submit reads it."""
    folder = os.environ.get("SPARK_CONF_DIR")
    if not folder:
        import pyspark  # without SPARK_HOME, PySpark's own folder is Spark's home

        folder = os.path.join(os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__), "conf")
    out = {}
    try:
        with open(os.path.join(folder, "spark-defaults.conf"), encoding="utf-8") as f:
            for line in f:
                found = re.match(r"\s*([^#\s=:]+)(?:\s*[=:]\s*|\s+)(.*?)\s*$", line)
                if found:
                    out[found.group(1)] = found.group(2)
    except OSError:
        pass
    return out


def log4j_file() -> str:
    """fruitlens's log4j2.properties as a real file (extracted when fruitlens runs from a zip)."""
    found = resources.files("fruitlens.spark") / "log4j2.properties"
    if isinstance(found, Path) and found.is_file():
        return str(found)
    global _LOG4J_COPY
    if _LOG4J_COPY is None:
        fd, _LOG4J_COPY = tempfile.mkstemp(prefix="fruitlens-log4j2-", suffix=".properties")
        with os.fdopen(fd, "wb") as f:
            f.write(found.read_bytes())
    return _LOG4J_COPY


_LOG4J_COPY: str | None = None


def driver_java_options(cfg: SparkConfig) -> str:
    """The driver JVM's options: yours (--conf spark.driver.extraJavaOptions, else
    spark-defaults.conf's), then fruitlens's: C1 only (SparkConfig.quick_jit) and its log4j
    configuration, each unless yours already set it."""
    existing = (
        cfg.extra_conf.get("spark.driver.extraJavaOptions") or spark_defaults().get("spark.driver.extraJavaOptions", "")
    ).strip()
    ours = []
    # When the driver JVM (in local mode also the executor) only plans and moves small batches,
    # the C1 compiler alone saves the ~11 CPU-seconds C2 spends compiling Spark on the two
    # cores inference needs (featurize 10k: JVM 25 -> 13 CPU-s; reduce not slower). Not for
    # train: Spark ML's optimizers run in the JVM and need C2 (SparkConfig.quick_jit).
    if cfg.quick_jit and "TieredStopAtLevel" not in existing:
        ours.append("-XX:TieredStopAtLevel=1")
    if "log4j2.configurationFile" not in existing and "log4j.configuration" not in existing:
        ours.append(f"-Dlog4j2.configurationFile={log4j_file()}")
    return " ".join([existing, *ours]).strip()


def shuffle_partitions(master: str, conf: dict[str, str], default_parallelism: int) -> int:
    """spark.sql.shuffle.partitions when you did not set it: twice the cores the application can
    use, at least 8 (local[N]: N; a cluster: spark.default.parallelism, spark.cores.max, or its
    executors x cores when fixed). A cluster whose size is not known when the application starts
    (dynamic allocation without a maximum, as on EMR) gets Spark's own default, 200, or twice the
    cores registered by then if more; adaptive execution merges small shuffle partitions anyway."""

    def number(key: str) -> int | None:
        value = conf.get(key, "").strip()
        return int(value) if value.isdigit() and int(value) < 1_000_000 else None

    cores = None
    if master.startswith("local"):
        cores = default_parallelism
    elif number("spark.default.parallelism"):
        cores = number("spark.default.parallelism")
    elif number("spark.cores.max"):
        cores = number("spark.cores.max")
    elif number("spark.executor.cores"):
        dynamic = conf.get("spark.dynamicAllocation.enabled", "false").strip().lower() == "true"
        executors = number("spark.dynamicAllocation.maxExecutors") if dynamic else number("spark.executor.instances")
        cores = executors * number("spark.executor.cores") if executors else None
    if cores:
        return max(8, 2 * cores)
    return max(200, 2 * default_parallelism)


def versions(spark) -> dict:
    import pyspark

    return {
        "spark": spark.version,
        "pyspark": pyspark.__version__,
        "python": platform.python_version(),
        "java": spark.sparkContext._jvm.System.getProperty("java.version"),
    }
