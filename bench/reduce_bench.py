"""The PCA fit: fruitlens' EigenPCA against Spark ML's PCA on the same embeddings, in one run.

    .venv/bin/python bench/reduce_bench.py [EMBEDDINGS] [--copies 1 7]

EMBEDDINGS: an embeddings dataset (default: bench/_work/quality/embeddings, which
`bench/quality_bench.py` makes from the Fruits-360 sample). `--copies N` stacks the rows N times
(7 copies of the sample's 13,090 = 91,630 rows, about the full Fruits-360). For each size, after
the same StandardScaler fit, times what `reduce` did before (Spark ML's `PCA(k=dim)` for the
spectrum, then `PCA(k)` at the chosen k: two covariance passes, two SVDs) against what it does now
(one covariance pass summed by NumPy, one eigendecomposition), checks both give the same spectrum
and projections, and prints a Markdown table. Writes bench/_work/reduce_bench.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "_work"
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("embeddings", nargs="?", default=str(WORK / "quality" / "embeddings"))
    ap.add_argument("--copies", type=int, nargs="+", default=[1, 7])
    ap.add_argument("--variance", type=float, default=0.95)
    args = ap.parse_args()
    if not Path(args.embeddings).exists():
        sys.exit(f"no embeddings at {args.embeddings}: run bench/quality_bench.py first, or name a dataset")

    from pyspark import StorageLevel
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.ml.functions import array_to_vector, vector_to_array

    from fruitlens.config import SparkConfig
    from fruitlens.reduction.sparkml import (
        choose_k,
        covariance,
        pca_model,
        principal_components,
    )
    from fruitlens.spark.session import get_session

    spark = get_session(SparkConfig(extra_conf={"spark.ui.enabled": "false"}))
    base = spark.read.parquet(args.embeddings).select(array_to_vector("embedding").alias("features"))
    results = []
    for copies in args.copies:
        data = functools.reduce(lambda a, b: a.unionAll(b), [base] * copies)
        scaler = StandardScaler(withMean=True, withStd=True, inputCol="features", outputCol="scaled").fit(data)
        # on local disk, as both fits read it: 91k x 1992 doubles do not fit in the default 2g heap
        scaled = scaler.transform(data).select("scaled").persist(StorageLevel.DISK_ONLY)
        rows = scaled.count()
        dim = len(scaled.first()["scaled"])

        t0 = time.perf_counter()
        full = PCA(k=dim, inputCol="scaled", outputCol="pca").fit(scaled)
        k = choose_k(full.explainedVariance.toArray(), args.variance)
        theirs = PCA(k=k, inputCol="scaled", outputCol="pca").fit(scaled)
        spark_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        cov = covariance(scaled, "scaled")
        t1 = time.perf_counter()
        components, spectrum = principal_components(cov)
        k_ours = choose_k(spectrum, args.variance)
        ours = pca_model(spark, components[:, :k_ours], spectrum[:k_ours], "scaled", "pca")
        ours_s = time.perf_counter() - t0

        def project(m, data=scaled):
            return np.array(
                [r.p for r in m.transform(data.limit(2000)).select(vector_to_array("pca").alias("p")).collect()]
            )

        a, b = project(ours), project(theirs)
        a, b = a[:, : min(k, k_ours)], b[:, : min(k, k_ours)]
        signs = np.sign((a * b).sum(axis=0))
        results.append(
            {
                "rows": rows,
                "dim": dim,
                "k": k,
                "k_ours": k_ours,
                "spark_pca_s": round(spark_s, 1),
                "eigen_pca_s": round(ours_s, 1),
                "covariance_s": round(t1 - t0, 1),
                "eigh_s": round(ours_s - (t1 - t0), 1),
                "speedup": round(spark_s / ours_s, 2),
                "spectrum_max_diff": float(np.abs(spectrum - full.explainedVariance.toArray()).max()),
                "projection_max_diff": float(np.abs(a - b * signs).max()),
                "projection_max": float(np.abs(b).max()),
            }
        )
        print(results[-1], flush=True)
        scaled.unpersist()
    spark.stop()
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "reduce_bench.json").write_text(json.dumps(results, indent=1))
    print(
        "\n| rows | k | Spark ML PCA (full + k) s | EigenPCA s (covariance + eigh) | speed-up | max spectrum diff | "
        "max projection diff |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    for r in results:
        print(
            f"| {r['rows']:,} | {r['k']} | {r['spark_pca_s']} | "
            f"{r['eigen_pca_s']} ({r['covariance_s']} + {r['eigh_s']}) | "
            f"**{r['speedup']}×** | {r['spectrum_max_diff']:.1e} | "
            f"{r['projection_max_diff']:.1e} (of {r['projection_max']:.0f}) |"
        )


if __name__ == "__main__":
    main()
