"""Quality: a logistic regression (Spark ML) on the PCA features, fit on Training, scored on Test.

    .venv/bin/python bench/quality_bench.py [INPUT] [--variance 0.95] [--image-size 160]

Runs `fruitlens run` on INPUT (default: the Fruits-360 sample in ../shared), then fits a
multinomial LogisticRegression on the `train` rows of OUTPUT/features and reports accuracy on
the `test` rows. Writes bench/_work/quality_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WORK = REPO / "bench" / "_work"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", nargs="?", default=str(SHARED / "data" / "fruits-360-sample"))
    ap.add_argument("--variance", type=float, default=0.95)
    ap.add_argument("--reg", type=float, default=0.01, help="L2 regularization of the logistic regression")
    ap.add_argument("--image-size", type=int, default=None, help="fruitlens run --image-size (default: the backbone's)")
    args = ap.parse_args()
    out = WORK / ("quality" if args.image_size is None else f"quality-{args.image_size}")
    sized = [] if args.image_size is None else ["--image-size", str(args.image_size)]
    env = {**os.environ, "FRUITLENS_MODEL_DIR": str(SHARED / "models")}
    t0 = time.perf_counter()
    subprocess.run(
        [str(REPO / ".venv/bin/fruitlens"), "run", args.input, str(out), "--variance", str(args.variance), *sized],
        check=True,
        env=env,
    )
    chain_s = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text())

    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.functions import array_to_vector

    from fruitlens.config import SparkConfig
    from fruitlens.spark.session import get_session

    spark = get_session(SparkConfig(app_name="fruitlens-quality"))
    df = spark.read.parquet(f"file://{out}/features").withColumn("x", array_to_vector("pca"))
    df = StringIndexer(inputCol="label", outputCol="y").fit(df).transform(df).cache()
    train, test = df.filter("split = 'train'"), df.filter("split = 'test'")
    t0 = time.perf_counter()
    model = LogisticRegression(featuresCol="x", labelCol="y", maxIter=200, regParam=args.reg).fit(train)
    fit_s = time.perf_counter() - t0
    evaluator = MulticlassClassificationEvaluator(labelCol="y", predictionCol="prediction", metricName="accuracy")
    result = {
        "input": args.input,
        "image_size": report["featurize"]["backbone"]["input_size"],
        "classes": df.select("label").distinct().count(),
        "train_rows": train.count(),
        "test_rows": test.count(),
        "k": report["reduce"]["k"],
        "explained_variance_at_k": report["reduce"]["explained_variance_at_k"],
        "train_accuracy": round(evaluator.evaluate(model.transform(train)), 4),
        "test_accuracy": round(evaluator.evaluate(model.transform(test)), 4),
        "logistic_regression_fit_s": round(fit_s, 1),
        "fruitlens_run_s": round(chain_s, 1),
        "featurize_images_per_s": report["featurize"]["stages"]["embed"]["images_per_s"],
        "errors": report["featurize"]["errors"],
    }
    spark.stop()
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / f"{out.name}_bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
