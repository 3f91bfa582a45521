"""A real Spark standalone cluster on this machine (loopback): one master and N workers, each its
own JVM with its own Python workers, started from the PyPI PySpark's `spark-class` (which has no
sbin/start-*.sh). Used by the tests and the scaling benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandaloneCluster:
    def __init__(self, workdir: Path, workers: int = 2, cores: int = 1, memory: str = "2g"):
        self.workdir = workdir
        self.n_workers, self.cores, self.memory = workers, cores, memory
        self.procs: list[subprocess.Popen] = []
        self.worker_dirs: list[Path] = []
        self.port, self.ui_port = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
        proc = subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def start(self) -> StandaloneCluster:
        self._spawn(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--webui-port",
            str(self.ui_port),
        )
        self._wait(lambda: self.state() is not None, "master")
        for i in range(self.n_workers):
            work = self.workdir / f"worker-{i}"
            work.mkdir()
            self.worker_dirs.append(work)
            self._spawn(
                f"worker-{i}",
                "org.apache.spark.deploy.worker.Worker",
                self.url,
                "--host",
                "127.0.0.1",
                "--cores",
                str(self.cores),
                "--memory",
                self.memory,
                "--webui-port",
                str(free_port()),
                "--work-dir",
                str(work),
            )
        self._wait(
            lambda: len([w for w in self.state()["workers"] if w["state"] == "ALIVE"]) == self.n_workers, "workers"
        )
        return self

    def state(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as resp:
                return json.load(resp)
        except OSError:
            return None

    def _wait(self, ready, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except (TypeError, KeyError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"Spark {what} did not come up; see logs in {self.workdir}")

    def executors(self, worker: int) -> list:
        """Executor JVMs (psutil processes) launched by worker `worker` (working dir under its work dir)."""
        import psutil

        found = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if "CoarseGrainedExecutorBackend" in " ".join(p.info["cmdline"] or []) and p.cwd().startswith(
                    str(self.worker_dirs[worker])
                ):
                    found.append(p)
            except psutil.Error:
                continue
        return found

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
