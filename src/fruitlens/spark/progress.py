"""Progress of long Spark stages on the console, from the driver's status tracker."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

console = Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def spark_progress(spark, description: str, total_items: int | None = None):
    """Show completed/total tasks of the running job group while the block runs.

    On a terminal it is a live bar; elsewhere (logs, CI) a line at the start and at the end.
    """
    sc = spark.sparkContext
    group = f"fruitlens-{description}-{time.monotonic_ns()}"
    sc.setJobGroup(group, description)
    stop = threading.Event()
    started = time.perf_counter()
    interactive = sys.stderr.isatty()
    if not interactive:
        console.print(f"[fruitlens] {description} ...", markup=False)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not interactive,
    )

    def poll() -> None:
        task = progress.add_task(description, total=None)
        tracker = sc.statusTracker()
        while not stop.wait(0.5):
            done = total = 0
            for job_id in tracker.getJobIdsForGroup(group) or []:
                job = tracker.getJobInfo(job_id)
                for stage_id in job.stageIds if job else []:
                    info = tracker.getStageInfo(stage_id)
                    if info:
                        done += info.numCompletedTasks
                        total += info.numTasks
            if total:
                progress.update(task, completed=done, total=total)

    thread = threading.Thread(target=poll, daemon=True)
    with progress:
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            sc.setLocalProperty("spark.jobGroup.id", None)
    if not interactive:
        console.print(f"[fruitlens] {description} done in {time.perf_counter() - started:.1f}s", markup=False)
