"""Growth without recomputation, on real Spark and real images: incremental runs, --full,
--reuse-model, and resume after the driver is killed (SIGKILL) mid-run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import MODELS, SAMPLE, copy_sample, shared

from fruitlens import FruitlensError
from fruitlens.config import (
    DEFAULT_BACKBONE,
    FeaturizeConfig,
    ReduceConfig,
    SparkConfig,
)
from fruitlens.jobs import run_all, run_featurize

pytestmark = shared
SPARK = SparkConfig()


def read(path) -> pd.DataFrame:
    return ds.dataset(str(path), format="parquet").to_table().to_pandas()


def inodes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in folder.glob("*.parquet")}


def test_incremental_run_embeds_only_what_changed_and_equals_a_full_run(spark, tmp_path):
    data = copy_sample(tmp_path / "in", classes=5, train=8, test=4)
    (data / "Training" / copy_sample.__name__).mkdir()  # an empty folder: harmless
    bad = data / "Test" / "bad.jpg"
    bad.write_text("not a picture")
    out = tmp_path / "out"
    cfg = FeaturizeConfig(input=str(data), output=str(out), images_per_partition=12)
    first = run_featurize(cfg, SPARK, spark=spark, quiet=True)["featurize"]
    assert first["incremental"]["new"] == 61 and first["incremental"]["embedded"] == 61
    before = inodes(out / "embeddings")

    # Churn: 3 new images, 2 removed, 1 changed in place (other content), 1 bad file unchanged.
    spare = sorted((SAMPLE / "Training" / "Kiwi").glob("*.jpg"))[:3]
    (data / "Training" / "Kiwi").mkdir()
    for f in spare:
        shutil.copy(f, data / "Training" / "Kiwi" / f.name)
    images = sorted(p for p in data.rglob("*.jpg") if p.parent.name != "Kiwi" and p != bad)
    images[0].unlink()
    images[1].unlink()
    shutil.copy(sorted((SAMPLE / "Test" / "Kiwi").glob("*.jpg"))[0], images[2])
    second = run_featurize(cfg, SPARK, spark=spark, quiet=True)["featurize"]
    inc = second["incremental"]
    assert (inc["new"], inc["changed"], inc["removed"], inc["unchanged"]) == (
        3,
        1,
        2,
        58,
    )  # 57 images + the bad file (its error kept)
    assert inc["embedded"] == 4 and second["stages"]["embed"]["images"] == 4  # only those were read
    assert second["ok"] == 61 and second["errors"] == 1 and second["errors_by_reason"] == {"not an image": 1}
    after = inodes(out / "embeddings")
    kept = set(before) & set(after)
    assert inc["kept_files"] >= 1 and len(kept) == inc["kept_files"] - 1  # + the errors file with bad.jpg
    assert all(before[n] == after[n] for n in kept)  # the same files (hard links), not rewritten
    manifest = json.loads((out / "embeddings" / "_SUCCESS").read_text())
    assert sorted(f["path"] for f in manifest["files"]) == sorted(after) and manifest["rows"] == 61

    full_out = tmp_path / "full"
    run_featurize(
        FeaturizeConfig(input=str(data), output=str(full_out), incremental=False), SPARK, spark=spark, quiet=True
    )
    inc_rows = read(out / "embeddings").set_index("path").sort_index()
    full_rows = read(full_out / "embeddings").set_index("path").sort_index()
    assert list(inc_rows.index) == list(full_rows.index)
    assert inc_rows.index.is_unique
    for path in full_rows.index:
        np.testing.assert_array_equal(inc_rows.loc[path, "embedding"], full_rows.loc[path, "embedding"])
        assert (
            inc_rows.loc[path, ["label", "split", "size_bytes", "modified_ns"]].tolist()
            == full_rows.loc[path, ["label", "split", "size_bytes", "modified_ns"]].tolist()
        )
    assert read(out / "errors").path.tolist() == [str(bad)]

    third = run_featurize(cfg, SPARK, spark=spark, quiet=True)["featurize"]["incremental"]
    assert (third["embedded"], third["unchanged"], third["rewritten_files"]) == (0, 62, 0)
    assert inodes(out / "embeddings") == after
    assert not (out / "_staging").exists()


def test_other_settings_mean_everything_is_embedded_again(spark, tmp_path):
    data = copy_sample(tmp_path / "in", classes=2, train=3, test=2)
    out = tmp_path / "out"
    run_featurize(FeaturizeConfig(input=str(data), output=str(out)), SPARK, spark=spark, quiet=True)
    report = run_featurize(
        FeaturizeConfig(input=str(data), output=str(out), max_pixels=50_000_000), SPARK, spark=spark, quiet=True
    )["featurize"]["incremental"]
    assert report["embedded"] == 10 and report["unchanged"] == 0
    assert any("max_pixels: 100000000 -> 50000000" in n for n in report["notes"])


def test_run_refits_by_default_and_reuses_the_model_when_asked(spark, tmp_path, capsys):
    data = copy_sample(tmp_path / "in", classes=4, train=6, test=3)
    out = tmp_path / "out"
    run_all(
        FeaturizeConfig(input=str(data), output=str(out)),
        ReduceConfig(input=str(out), output=str(out), k=6, variance=None),
        SPARK,
        spark=spark,
        quiet=True,
    )
    model_manifest = json.loads((out / "pca" / "_SUCCESS").read_text())
    assert model_manifest["params"]["backbone"] == DEFAULT_BACKBONE
    # an OUTPUT written before 0.2 holds its scaler + PCA under OUTPUT/model: still reused, renamed
    (out / "pca").rename(out / "model")
    extra = sorted((SAMPLE / "Test" / "Kiwi").glob("*.jpg"))[:2]
    (data / "Test" / "Kiwi").mkdir()
    for f in extra:
        shutil.copy(f, data / "Test" / "Kiwi" / f.name)
    second = run_all(
        FeaturizeConfig(input=str(data), output=str(out)),
        ReduceConfig(input=str(out), output=str(out), variance=None, reuse_model=True),
        SPARK,
        spark=spark,
        quiet=True,
    )
    assert second["featurize"]["incremental"]["embedded"] == 2
    assert second["reduce"]["k"] == 6 and second["reduce"]["fit_on"] == "reused model"
    assert "now named OUTPUT/pca/" in capsys.readouterr().err and not (out / "model").exists()
    again_manifest = json.loads((out / "pca" / "_SUCCESS").read_text())
    assert again_manifest["params"] == model_manifest["params"]  # the same model (its projections: below)
    assert len(again_manifest["files"]) == len(model_manifest["files"])
    feats = read(out / "features").set_index("path")
    assert len(feats) == 38 and {len(v) for v in feats.pca} == {6}
    old = read(tmp_path / "out" / "features")  # unchanged rows project exactly as before
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import array_to_vector, vector_to_array

    emb = spark.read.parquet(f"file://{out}/embeddings").withColumn("features", array_to_vector("embedding"))
    again = PipelineModel.load(f"file://{out}/pca").transform(emb).select("path", vector_to_array("pca").alias("pca"))
    again = again.toPandas().set_index("path")
    for path in feats.index:
        np.testing.assert_allclose(feats.loc[path, "pca"], again.loc[path, "pca"], rtol=1e-9, atol=1e-9)
    assert len(old) == 38

    refit = run_all(
        FeaturizeConfig(input=str(data), output=str(out)),
        ReduceConfig(input=str(out), output=str(out), k=5, variance=None),
        SPARK,
        spark=spark,
        quiet=True,
    )
    assert refit["reduce"]["k"] == 5 and refit["reduce"]["fit_rows"] == 24


def test_reuse_model_without_a_model_is_a_clear_error(spark, tmp_path):
    data = copy_sample(tmp_path / "in", classes=2, train=2, test=1)
    with pytest.raises(FruitlensError, match="no fitted scaler"):
        run_all(
            FeaturizeConfig(input=str(data), output=str(tmp_path / "out")),
            ReduceConfig(input="", output=str(tmp_path / "out"), variance=None, reuse_model=True),
            SPARK,
            spark=spark,
            quiet=True,
        )


def _complete_parts(out: Path) -> list[Path]:
    done = []
    for p in (out / "_staging").glob("*/embeddings/*.parquet"):
        try:
            pq.read_metadata(p)
            done.append(p)
        except Exception:  # noqa: BLE001 - still being written
            pass
    return done


@pytest.mark.spark  # the CLI, in a subprocess
def test_driver_killed_mid_run_then_rerun_resumes_finished_partitions(tmp_path):
    data = copy_sample(tmp_path / "in", classes=20, train=12, test=6)  # 360 images
    out = tmp_path / "out"
    env = {**os.environ, "FRUITLENS_MODEL_DIR": str(MODELS)}
    cmd = [
        sys.executable,
        "-m",
        "fruitlens",
        "featurize",
        str(data),
        str(out),
        "--master",
        "local[2]",
        "--images-per-partition",
        "10",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while len(_complete_parts(out)) < 4:
            assert proc.poll() is None, "the run finished before it could be killed: make it longer"
            assert time.monotonic() < deadline, "no part file was finished in time"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and its Python workers: a lost machine
        proc.wait()
    finished = _complete_parts(out)
    finished_rows = sum(pq.read_metadata(p).num_rows for p in finished)
    assert not (out / "embeddings").exists()  # nothing was published

    res = subprocess.run([*cmd[:-1]], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())["featurize"]
    inc = report["incremental"]
    assert inc["resumed_rows"] >= finished_rows > 0 and inc["resumed_files"] >= len(finished)
    assert inc["embedded"] == 360 - inc["resumed_rows"]  # finished partitions were not recomputed
    assert "resumed" in res.stdout
    emb = read(out / "embeddings")
    assert len(emb) == 360 and emb.path.is_unique  # every input exactly once
    assert set(emb.path) == {str(p) for p in data.rglob("*.jpg")}
    assert not (out / "_staging").exists()


def test_cut_part_files_and_stray_files_in_staging_do_not_break_a_rerun(spark, tmp_path):
    data = copy_sample(tmp_path / "in", classes=2, train=3, test=2)
    out = tmp_path / "out"
    cfg = FeaturizeConfig(input=str(data), output=str(out))
    run_featurize(cfg, SPARK, spark=spark, quiet=True)
    params = json.loads((out / "embeddings" / "_SUCCESS").read_text())["params"]
    # An interrupted run: a part file cut mid-write, its run info; another run made with other settings.
    whole = next((out / "embeddings").glob("*.parquet")).read_bytes()
    dead = out / "_staging" / "deadrun0000" / "embeddings"
    dead.mkdir(parents=True)
    (dead / "part-00000-deadrun0000-0-abcdef.parquet").write_bytes(whole[: len(whole) // 2])
    (out / "_staging" / "deadrun0000" / "_run.json").write_text(json.dumps({"params": params}))
    other = out / "_staging" / "otherrun000"
    other.mkdir()
    (other / "_run.json").write_text(json.dumps({"params": {**params, "max_pixels": 1}}))
    (out / "_staging" / ".DS_Store").write_bytes(b"\0")
    inc = run_featurize(cfg, SPARK, spark=spark, quiet=True)["featurize"]["incremental"]
    assert inc["incomplete_files"] == 1 and inc["embedded"] == 0 and inc["unchanged"] == 10
    assert any("otherrun000" in n for n in inc["notes"])
    assert not (out / "_staging" / "deadrun0000").exists()  # taken over, then removed
    assert other.exists()  # another run's work is not deleted


def test_train_refuses_to_replace_what_is_not_a_model(spark, tmp_path):
    data = copy_sample(tmp_path / "in", classes=2, train=3, test=1)
    out = tmp_path / "out"
    run_featurize(FeaturizeConfig(input=str(data), output=str(out)), SPARK, spark=spark, quiet=True)
    from fruitlens.config import TrainConfig
    from fruitlens.jobs import run_train

    with pytest.raises(FruitlensError, match="would replace the embeddings"):
        run_train(TrainConfig(input=str(out), output=str(out)), SPARK, spark=spark, quiet=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("precious")
    with pytest.raises(FruitlensError, match="not a fruitlens model folder"):
        run_train(TrainConfig(input=str(out), output=str(tmp_path / "notes")), SPARK, spark=spark, quiet=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "precious"
