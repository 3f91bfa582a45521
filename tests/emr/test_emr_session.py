"""The Spark session's share of running on a cluster, in real local-mode JVMs (one per case, in a
subprocess: a process holds one SparkContext): the driver JVM's options are yours, then
fruitlens's (read back from the running JVM), never a path inside a zip, even when fruitlens is
imported from one; spark.sql.shuffle.partitions follows the cores unless you set it."""

import json
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO

from fruitlens.spark.session import shuffle_partitions

PROBE = """
import json, sys
from fruitlens.config import SparkConfig
from fruitlens.spark.session import get_session
conf = json.loads(sys.argv[1])
spark = get_session(SparkConfig(master=sys.argv[2], extra_conf=conf))
jvm = spark.sparkContext._jvm
args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
import fruitlens
print(json.dumps({"jvm": args, "shuffle": spark.conf.get("spark.sql.shuffle.partitions"), "from": fruitlens.__file__}))
spark.stop()
"""


def probe(tmp_path, master="local[2]", conf=None, spark_defaults=None, pythonpath=None):
    env_conf = tmp_path / "conf"
    env_conf.mkdir(exist_ok=True)
    (env_conf / "spark-defaults.conf").write_text(spark_defaults or "")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SPARK_CONF_DIR": str(env_conf)}
    import os

    env.update({k: v for k, v in os.environ.items() if k in ("JAVA_HOME", "LANG")})
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    conf = {"spark.ui.enabled": "false", **(conf or {})}
    res = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(conf), master],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.spark  # a session in a subprocess
def test_driver_options_are_yours_then_fruitlenss_and_shuffle_partitions_follow_the_cores(tmp_path):
    found = probe(tmp_path, master="local[6]", spark_defaults="spark.driver.extraJavaOptions -Dfrom.defaults=1\n")
    jvm = found["jvm"]
    assert "-Dfrom.defaults=1" in jvm and "-XX:TieredStopAtLevel=1" in jvm  # spark-defaults' kept, ours added
    assert jvm.index("-Dfrom.defaults=1") < jvm.index("-XX:TieredStopAtLevel=1")
    log4j = [a for a in jvm if a.startswith("-Dlog4j2.configurationFile=")]
    assert log4j == [f"-Dlog4j2.configurationFile={REPO / 'src/fruitlens/spark/log4j2.properties'}"]
    assert found["shuffle"] == "12"  # 2 x 6 cores (it was 8 whatever the cores)
    # yours win: your log4j configuration and your shuffle partitions are left as they are
    found = probe(
        tmp_path,
        conf={
            "spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=/etc/mine.properties",
            "spark.sql.shuffle.partitions": "3",
        },
    )
    assert [a for a in found["jvm"] if "log4j" in a] == ["-Dlog4j2.configurationFile=/etc/mine.properties"]
    assert found["shuffle"] == "3"


@pytest.mark.spark  # a session in a subprocess
def test_fruitlens_imported_from_a_zip_gives_the_jvm_a_real_log4j_file(tmp_path):
    from fruitlens.spark.packaging import package_zip

    shipped = tmp_path / "fruitlens.zip"
    shipped.write_bytes(open(package_zip(), "rb").read())
    # run from the zip alone: a folder with only the zip, and this venv's site-packages for the dependencies
    # (the checkout's fruitlens is not on the path: PYTHONPATH puts the zip first)
    found = probe(tmp_path, pythonpath=str(shipped))
    assert found["from"].startswith(str(shipped))  # really imported from the zip
    (log4j,) = [a.split("=", 1)[1] for a in found["jvm"] if a.startswith("-Dlog4j2.configurationFile=")]
    assert (
        ".zip" not in log4j
        and open(log4j).read() == zipfile.ZipFile(shipped).read("fruitlens/spark/log4j2.properties").decode()
    )


def test_shuffle_partitions_on_clusters():
    assert shuffle_partitions("local[2]", {}, 2) == 8
    assert shuffle_partitions("local[16]", {}, 16) == 32
    assert shuffle_partitions("spark://m:7077", {"spark.cores.max": "40"}, 2) == 80
    assert shuffle_partitions("yarn", {"spark.executor.cores": "4", "spark.executor.instances": "10"}, 2) == 80
    assert shuffle_partitions("yarn", {"spark.default.parallelism": "96"}, 2) == 192
    # EMR: dynamic allocation without a maximum, executors not there yet at start
    emr = {"spark.executor.cores": "4", "spark.dynamicAllocation.enabled": "true"}
    assert shuffle_partitions("yarn", emr, 2) == 200
    assert shuffle_partitions("yarn", {**emr, "spark.dynamicAllocation.maxExecutors": "30"}, 2) == 240
    assert shuffle_partitions("yarn", emr, 160) == 320  # executors already registered: their cores
