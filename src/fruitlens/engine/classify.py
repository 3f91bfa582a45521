"""classify: every image under INPUT -> predictions, on Spark. The images go through featurize's
own distributed path (listing, incremental plan, tasks, publishing) into OUTPUT/embeddings and
OUTPUT/errors, with the views the model averages; the portable classifier (broadcast once) then
runs inside tasks over the embeddings and the predictions are published like every other dataset.
Accuracy is counted from the photos' labels through the model's catalogue (a label -> its species
and family), at species and at family level, over the photos of a species (those labelled
"(not produce)" are counted apart), as train's report counts each collection: `PortableModel.scores`
on the model's views gives both."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .. import schemas
from ..catalogue import NOT_PRODUCE, Catalogue
from ..spark.datasets import spark_type, write_dataframe
from ..spark.progress import spark_progress
from ..storage.writer import Target
from .model import PortableModel


def predictions(
    spark, embeddings_df, model: PortableModel, catalogue: Catalogue, target: Target, collection: str, batch: int = 1024
) -> dict:
    """Apply `model` to an embeddings DataFrame; publish OUTPUT/predictions; return the summary."""
    shared = spark.sparkContext.broadcast(model)
    df = _classified(embeddings_df, shared, model.views, batch).cache()
    with spark_progress(spark, "classifying"):
        manifest = write_dataframe(df, target, schemas.PREDICTIONS, {"model": model.meta.get("kind")})
        counts = _counts(spark, df, model, catalogue)
    df.unpersist()
    shared.unpersist()
    return _summary(manifest.rows, counts, model.views, catalogue, collection)


@dataclass(frozen=True)
class _Counts:
    """The predictions counted against the labels (through the catalogue)."""

    totals: dict  # rows, not_sure, labelled (of a class), produce (of a species), no_produce(_not_sure), correct, ...
    not_sure_by_reason: dict


def _classified(embeddings_df, shared, views: int, batch: int):
    """A DataFrame of PREDICTIONS: the broadcast model applied inside tasks, `batch` photos at a time."""

    def classify_partition(batches):
        m = shared.value
        for b in batches:
            for start in range(0, b.num_rows, batch):
                part = b.slice(start, batch)
                if part.num_rows == 0:
                    continue
                x = _rows(part, views)
                preds = m.predict(x, views=views)
                yield pa.RecordBatch.from_pydict(
                    {
                        "path": part.column("path"),
                        "label": part.column("label"),
                        "predicted": [p.predicted for p in preds],
                        "probability": [p.top[0][1] for p in preds],
                        "not_sure": [p.not_sure for p in preds],
                        "why_not_sure": [p.why for p in preds],
                        "novelty": [p.novelty for p in preds],
                        "top5": [[{"label": c, "probability": q} for c, q in p.top] for p in preds],
                        "split": part.column("split"),
                        "path_bytes": part.column("path_bytes"),
                        "level": [p.level for p in preds],
                        "species": [p.predicted if p.level == "species" else None for p in preds],
                        "family": [p.family if p.level else None for p in preds],
                        "family_probability": [p.family_probability for p in preds],
                    },
                    schema=schemas.PREDICTIONS,
                )

    columns = ["path", "label", "split", "path_bytes", "embedding"] + (["views"] if views > 1 else [])
    return embeddings_df.select(*columns).mapInArrow(classify_partition, spark_type(schemas.PREDICTIONS))


def _counts(spark, df, model: PortableModel, catalogue: Catalogue) -> _Counts:
    """One aggregation of the predictions joined with each label's species and family."""
    from pyspark.sql import functions as F

    family_of = dict(zip(model.classes, model.families))
    labels = [r["label"] for r in df.select("label").distinct().collect() if r["label"] is not None]
    truth = [(label, s, family_of[s]) for label in labels if (s := catalogue.species_of(label)) in family_of]
    truth_df = spark.createDataFrame(truth or [("", "", "")], "label string, true_species string, true_family string")
    guess_df = spark.createDataFrame(list(family_of.items()), "predicted string, predicted_family string")
    # the figures count the photos of a species, as train's report does ("(not produce)" apart)
    of_a_class = F.col("true_species").isNotNull()
    no_produce = of_a_class & (F.col("true_species") == NOT_PRODUCE)
    known = of_a_class & ~no_produce
    joined = df.join(F.broadcast(truth_df), "label", "left").join(F.broadcast(guess_df), "predicted", "left")
    answered = known & ~F.col("not_sure")
    right_answer = ((F.col("level") == "species") & (F.col("predicted") == F.col("true_species"))) | (
        (F.col("level") == "family") & (F.col("family") == F.col("true_family"))
    )
    row = joined.agg(
        F.count("*").alias("rows"),
        F.sum(F.col("not_sure").cast("int")).alias("not_sure"),
        F.sum(of_a_class.cast("int")).alias("labelled"),
        F.sum(known.cast("int")).alias("produce"),
        F.sum(no_produce.cast("int")).alias("no_produce"),
        F.sum((no_produce & F.col("not_sure")).cast("int")).alias("no_produce_not_sure"),
        F.sum((known & (F.col("predicted") == F.col("true_species"))).cast("int")).alias("correct"),
        F.sum((known & (F.col("predicted_family") == F.col("true_family"))).cast("int")).alias("family_correct"),
        F.sum(answered.cast("int")).alias("answered"),
        F.sum((answered & (F.col("level") == "species")).cast("int")).alias("answered_species"),
        F.sum((answered & right_answer).cast("int")).alias("answered_correct"),
    ).first()
    by_reason = {r["why_not_sure"]: r["count"] for r in df.filter("not_sure").groupBy("why_not_sure").count().collect()}
    return _Counts(row.asDict(), by_reason)


def _summary(rows: int, counts: _Counts, views: int, catalogue: Catalogue, collection: str) -> dict:
    row = counts.totals
    produce = row["produce"] or 0
    accuracy = {
        "photos_of_a_known_species": produce,
        "species_accuracy": (row["correct"] / produce) if produce else None,
        "family_accuracy": (row["family_correct"] / produce) if produce else None,
        "answered": (row["answered"] / produce) if produce else None,
        "answered_species": (row["answered_species"] / produce) if produce else None,
        "answers_right": (row["answered_correct"] / row["answered"]) if row["answered"] else None,
    }
    no_produce = row["no_produce"] or 0
    return {
        "rows": rows,
        "not_sure": row["not_sure"] or 0,
        "not_sure_by_reason": counts.not_sure_by_reason,
        "views_averaged": views,
        "catalogue": catalogue.source,
        "labelled_with_a_known_class": row["labelled"] or 0,
        "not_produce": {"photos": no_produce, "not_sure": (row["no_produce_not_sure"] or 0) / no_produce}
        if no_produce
        else None,
        "accuracy": accuracy["species_accuracy"],
        "family_accuracy": accuracy["family_accuracy"],
        "answered_accuracy": accuracy["answers_right"],
        "coverage": accuracy["answered"],
        "by_collection": {collection: accuracy},
    }


def _rows(part: pa.RecordBatch, views: int) -> np.ndarray:
    """(photos * views, dim): each photo's whole embedding, then its other views (as featurize
    wrote them for the model's views), photo by photo."""
    emb = part.column("embedding")
    dim = len(emb[0].as_py())
    x = np.asarray(emb.flatten(), np.float32).reshape(-1, dim)
    if views == 1:
        return x
    extra = np.asarray(part.column("views").flatten().flatten(), np.float32).reshape(len(x), views - 1, dim)
    return np.concatenate([x[:, None, :], extra], axis=1).reshape(-1, dim)
