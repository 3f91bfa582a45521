"""classify: every image under INPUT -> predictions, on Spark. The images go through featurize's
own distributed path (listing, incremental plan, tasks, publishing) into OUTPUT/embeddings and
OUTPUT/errors; the portable classifier (broadcast once) then runs inside tasks over the embeddings
and the predictions are published like every other dataset."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .. import schemas
from ..spark.datasets import write_dataframe
from ..spark.progress import spark_progress
from ..storage.writer import Target
from .model import PortableModel


def predictions(spark, embeddings_df, model: PortableModel, target: Target, batch: int = 1024) -> dict:
    """Apply `model` to an embeddings DataFrame; publish OUTPUT/predictions; return the summary."""
    from pyspark.sql import functions as F

    shared = spark.sparkContext.broadcast(model)

    def classify_partition(batches):
        m = shared.value
        for b in batches:
            for start in range(0, b.num_rows, batch):
                part = b.slice(start, batch)
                if part.num_rows == 0:
                    continue
                emb = part.column("embedding")
                dim = len(emb[0].as_py()) if part.num_rows else 0
                x = np.asarray(emb.flatten(), np.float32).reshape(-1, dim)
                preds = m.predict(x)
                yield pa.RecordBatch.from_pydict({
                    "path": part.column("path"), "label": part.column("label"),
                    "predicted": [p.predicted for p in preds],
                    "probability": [p.top[0][1] for p in preds],
                    "not_sure": [p.not_sure for p in preds],
                    "why_not_sure": [p.why for p in preds],
                    "novelty": [p.novelty for p in preds],
                    "top5": [[{"label": c, "probability": q} for c, q in p.top] for p in preds],
                    "split": part.column("split"), "path_bytes": part.column("path_bytes"),
                }, schema=schemas.PREDICTIONS)

    columns = ["path", "label", "split", "path_bytes", "embedding"]
    df = embeddings_df.select(*columns).mapInArrow(classify_partition, schemas.spark_type(schemas.PREDICTIONS)).cache()
    with spark_progress(spark, "classifying"):
        manifest = write_dataframe(df, target, schemas.PREDICTIONS, {"model": model.meta.get("kind")})
        known = F.col("label").isin(model.classes)
        row = df.agg(
            F.count("*").alias("rows"),
            F.sum(F.col("not_sure").cast("int")).alias("not_sure"),
            F.sum(known.cast("int")).alias("labelled"),
            F.sum((known & (F.col("predicted") == F.col("label"))).cast("int")).alias("correct"),
            F.sum((known & ~F.col("not_sure")).cast("int")).alias("answered"),
            F.sum((known & ~F.col("not_sure") & (F.col("predicted") == F.col("label"))).cast("int")).alias("answered_correct"),
        ).first()
        by_reason = {r["why_not_sure"]: r["count"] for r in df.filter("not_sure").groupBy("why_not_sure").count().collect()}
    df.unpersist()
    shared.unpersist()
    labelled = row["labelled"] or 0
    return {
        "rows": manifest.rows, "not_sure": row["not_sure"] or 0, "not_sure_by_reason": by_reason,
        "labelled_with_a_known_class": labelled,
        "accuracy": (row["correct"] / labelled) if labelled else None,
        "answered_accuracy": (row["answered_correct"] / row["answered"]) if row["answered"] else None,
        "coverage": (row["answered"] / labelled) if labelled else None,
    }
