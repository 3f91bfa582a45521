"""Where `train`'s photos are while it fits, chosen by their size: in the driver's memory
(`DriverData`, read with pyarrow, no JVM) or in Spark (`SparkData`, DataFrames that are never
collected: only each validation and test photo's probabilities come back to the driver, and a
few reference photos per class). Both give a solver its training rows (every view of every fit
photo), score a split with a fitted model (`PortableModel.scores` on the views `predict` would
average: `views_in`), and pick the reference photos of
the novelty rule, in the same way; `train` does not know which it has.

Roles: `fit` (train photos the candidates learn from), `validation` (a collection's own val/
split, or the last share of each class's train photos in path order), `test`; photos whose label
the catalogue does not know are left out (counted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import FruitlensError, schemas
from ..catalogue import Catalogue
from ..embedding.views import Views
from ..spark.datasets import read_dataframe
from ..storage.dataset import Dataset
from ..storage.location import Location

FIT, VAL, TEST = "fit", "validation", "test"


@dataclass
class Collection:
    name: str
    location: Location  # its embeddings dataset
    params: dict  # what its embeddings were made with (the manifest's)

    @property
    def view_names(self) -> list[str]:
        return list(Views.of_params(self.params).names)

    def rows(self) -> int:
        """Photos in it, from its manifest (0 when unknown)."""
        manifest = Dataset.at(self.location).manifest
        return int(manifest.rows) if manifest is not None and manifest.format == "parquet" else 0


@dataclass
class Scores:
    """A split's photos scored by a model: class index (-1: not a class of the model), collection,
    probabilities (its views averaged), novelty."""

    y: np.ndarray
    collection: np.ndarray
    probs: np.ndarray
    novelty: np.ndarray


VIEW_SETS = (1, 2, 4, 12)  # the view counts train chooses among for predict


def views_in(collections: list[Collection]) -> list[int]:
    """The view counts (1, 2, 4, 12) `predict` may average: those every collection was embedded
    with (each of their views, cut with one crop), so that every figure of every collection is
    computed on exactly the views `predict` and `classify` embed."""
    crops = {Views.of_params(c.params).crop for c in collections if len(c.view_names) > 1}
    return [
        count
        for count in VIEW_SETS
        if count == 1 or (len(crops) == 1 and all(set(Views(count).names) <= set(c.view_names) for c in collections))
    ]


def views_note(collections: list[Collection]) -> str | None:
    """One line when a collection limits the views `predict` may average (None when none does):
    which one, and how to lift it."""
    allowed = max(views_in(collections))
    some = max(count for count in VIEW_SETS if any(set(Views(count).names) <= set(c.view_names) for c in collections))
    if some <= allowed:
        return None
    crops = {Views.of_params(c.params).crop for c in collections if len(c.view_names) > 1}
    if len(crops) > 1:
        return (
            f"[train] predict averages at most {allowed} view: the collections' views were cut with different "
            f"crops ({', '.join(f'{c:g}' for c in sorted(crops))}); featurize them with one --crop to choose among more"
        )
    limiting = [c for c in collections if not set(Views(some).names) <= set(c.view_names)]
    names = ", ".join(f"{c.name} (embedded with {len(c.view_names)})" for c in limiting)
    return (
        f"[train] predict averages at most {allowed} view{'s' if allowed > 1 else ''}, as every collection "
        f"has them: {names} limits it; featurize it with --views {some} to let train choose among up to {some}"
    )


def view_rows(x: np.ndarray, views: list, names: list, count: int) -> np.ndarray:
    """(photos * count, dim): each photo's `count` views (Views(count).names), the whole photo
    first, as `predict` embeds them. `views[i]`: photo i's other views, `names[i]` their names (the
    whole photo first); a photo must have every one of them (`views_in`)."""
    if count == 1:
        return x
    wanted = Views(count).names
    out = np.empty((len(x) * count, x.shape[1]), np.float32)
    for i in range(len(x)):
        for j, name in enumerate(wanted):
            k = names[i].index(name) if name in names[i] else -1
            if k < 0 or (k > 0 and (views[i] is None or len(views[i]) < k)):
                raise FruitlensError(f"a photo has no {name!r} view to average {count} views: featurize it with them")
            out[i * count + j] = x[i] if k == 0 else views[i][k - 1]
    return out


def scored(model, x: np.ndarray, views: list, names: list, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities averaged over `count` views, novelty of the whole photo) of each photo:
    `PortableModel.scores`, the scoring `predict` and `classify` use, on the same views."""
    if not len(x):
        return np.zeros((0, len(model.classes))), np.zeros(0)
    probs, nov = [], []
    for start in range(0, len(x), 512):
        rows = view_rows(x[start : start + 512], views[start : start + 512], names[start : start + 512], count)
        p, n, _ = model.scores(rows, count)
        probs.append(p)
        nov.append(n)
    return np.concatenate(probs), np.concatenate(nov)


def roles_of(paths, labels, species, splits, has_validation: bool, share: float) -> list[str | None]:
    """fit / validation / test / None for each photo of one collection (the driver's rule; SparkData
    computes the same with a window)."""
    roles: list[str | None] = [None] * len(paths)
    by_class: dict[str, list[int]] = {}
    for i, (s, split) in enumerate(zip(species, splits)):
        if split == schemas.TEST:
            roles[i] = TEST
        elif s is None:
            continue
        elif split == schemas.VALIDATION:
            roles[i] = VAL
        elif split == schemas.TRAIN:
            if has_validation:
                roles[i] = FIT
            else:
                by_class.setdefault(str(labels[i]), []).append(i)
    for members in by_class.values():  # the last `share` of each class's photos in path order
        members.sort(key=lambda i: paths[i])
        n = len(members)
        for rank, i in enumerate(members):
            roles[i] = VAL if n > 1 and rank / (n - 1) >= 1.0 - share else FIT
    return roles


def _classes(per_role_species: dict, unknown: dict, catalogue: Catalogue) -> tuple[list[str], list[str]]:
    trained = sorted(set(per_role_species.get(FIT, ())) | set(per_role_species.get(VAL, ())))
    if not per_role_species.get(FIT):
        labels = sorted({label for per in unknown.values() for label in per})
        more = (
            f"; labels not in the catalogue: {', '.join(labels[:8])}"
            + (f" and {len(labels) - 8} more" if len(labels) > 8 else "")
            if labels
            else ""
        )
        raise FruitlensError(
            "no train photos to fit on (images under a train/ or Training/ folder whose label the "
            "catalogue names)" + more
        )
    if len(trained) < 2:
        raise FruitlensError(f"{len(trained)} class in the train photos: need at least 2")
    families = catalogue.families()
    return trained, [families.get(s, s) for s in trained]


# -- in the driver's memory -------------------------------------------------------------------------


@dataclass
class Photos:
    x: np.ndarray  # float32 (n, dim) whole photos
    views: list  # per photo: float32 (views - 1, dim) or None
    y: np.ndarray  # class index (-1: not a class of the model)
    collection: np.ndarray
    paths: list[str]
    names: list  # per photo: its views' names, the whole photo first

    def __len__(self) -> int:
        return len(self.y)

    def take(self, keep: np.ndarray) -> Photos:
        idx = np.flatnonzero(keep)
        return Photos(
            self.x[idx],
            [self.views[i] for i in idx],
            self.y[idx],
            self.collection[idx],
            [self.paths[i] for i in idx],
            [self.names[i] for i in idx],
        )

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Every view of every photo as a training row."""
        extra = [(v, y) for v, y in zip(self.views, self.y) if v is not None and len(v)]
        if not extra:
            return self.x, self.y
        return (
            np.concatenate([self.x, *[v for v, _ in extra]]),
            np.concatenate([self.y, *[np.full(len(v), label) for v, label in extra]]),
        )


class DriverData:
    kind = "driver"

    def __init__(self, collections: list[Collection], catalogue: Catalogue, share: float):
        self.collections = collections
        parts: dict[str, list] = {FIT: [], VAL: [], TEST: []}
        self.unknown: dict[str, dict[str, int]] = {}
        self.counts: dict[str, dict] = {}
        for index, coll in enumerate(collections):
            tables = []
            for _, t in Dataset.at(coll.location).tables(["path", "label", "split", "embedding", "views"]):
                schemas.check_embeddings_columns(t.column_names, coll.location.uri)
                tables.append(t)
            table = pa.concat_tables(tables, promote_options="default") if tables else None
            if table is None or table.num_rows == 0:
                raise FruitlensError(f"{coll.location.uri} holds no embeddings")
            labels, splits = table.column("label").to_pylist(), table.column("split").to_pylist()
            species = [catalogue.species_of(label) for label in labels]
            left_out: dict[str, int] = {}
            for label, s in zip(labels, species):
                if s is None:
                    left_out[str(label)] = left_out.get(str(label), 0) + 1
            if left_out:
                self.unknown[coll.name] = dict(sorted(left_out.items()))
            emb = table.column("embedding").combine_chunks()
            flat = np.asarray(pc.list_flatten(emb).to_numpy(zero_copy_only=False), np.float32)
            if len(flat) % len(labels):
                raise FruitlensError(f"{coll.location.uri}: embeddings of different lengths")
            x = flat.reshape(len(labels), -1)
            views = table.column("views").to_pylist() if "views" in table.column_names else None
            paths = table.column("path").to_pylist()
            has_validation = any(s == schemas.VALIDATION for s in splits)
            roles = roles_of(paths, labels, species, splits, has_validation, share)
            self.counts[coll.name] = _count(left_out, has_validation, share, len(coll.view_names), len(labels))
            for role in (FIT, VAL, TEST):
                keep = [i for i, r in enumerate(roles) if r == role]
                self.counts[coll.name][role] = len(keep)
                if keep:
                    parts[role].append(
                        (
                            index,
                            x[keep],
                            [np.asarray(views[i], np.float32) if views and views[i] else None for i in keep],
                            [species[i] for i in keep],
                            [paths[i] for i in keep],
                            coll.view_names,
                        )
                    )
        self.classes, self.families = _classes(
            {r: [s for p in ps for s in p[3]] for r, ps in parts.items()}, self.unknown, catalogue
        )
        index_of = {s: i for i, s in enumerate(self.classes)}
        self.photos: dict[str, Photos] = {}
        for role, ps in parts.items():
            x = np.concatenate([p[1] for p in ps]) if ps else np.zeros((0, 1), np.float32)
            y = np.array([index_of.get(s, -1) for p in ps for s in p[3]], np.int64)
            photos = Photos(
                x,
                [v for p in ps for v in p[2]],
                y,
                np.concatenate([np.full(len(p[3]), p[0]) for p in ps]) if ps else np.zeros(0, np.int64),
                [path for p in ps for path in p[4]],
                [p[5] for p in ps for _ in p[3]],
            )
            self.photos[role] = photos if role == TEST else photos.take(photos.y >= 0)
        if len(self.photos[VAL]) == 0:
            raise FruitlensError("too few train photos per class to carve a validation split")

    def size(self, role: str) -> int:
        return int((self.photos[role].y >= 0).sum()) if role == TEST else len(self.photos[role])

    def training_rows(self, roles: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        x, y = zip(*(self.photos[r].rows() for r in roles))
        return np.concatenate(x), np.concatenate(y)

    def score(self, model, role: str, views: int) -> Scores:
        p = self.photos[role]
        probs, nov = scored(model, p.x, p.views, p.names, views)
        return Scores(p.y, p.collection, probs, nov)

    def references(self, roles: tuple[str, ...], per_class: int) -> np.ndarray:
        """Up to `per_class` whole photos of each class, evenly spread over its photos in path order."""
        x = np.concatenate([self.photos[r].x for r in roles])
        y = np.concatenate([self.photos[r].y for r in roles])
        paths = [path for r in roles for path in self.photos[r].paths]
        keep = []
        for c in np.unique(y):
            members = sorted(np.flatnonzero(y == c), key=lambda i: paths[i])
            step = max(1.0, len(members) / per_class)
            keep += [members[int(j * step)] for j in range(min(per_class, len(members)))]
        return x[sorted(keep)]


def _count(left_out: dict, has_validation: bool, share: float, views: int, photos: int) -> dict:
    return {
        "photos": photos,
        "left_out": sum(left_out.values()),
        "validation_split": "its own validation split"
        if has_validation
        else f"the last {share:.0%} of each class's train photos in path order",
        "views": views,
    }


# -- in Spark ---------------------------------------------------------------------------------------


class SparkData:
    """The same photos as Spark DataFrames: read by Spark (natively where its JVM reaches the
    store, else through the tasks), the catalogue and the roles applied by joins and a window."""

    kind = "spark"

    def __init__(self, spark, collections: list[Collection], catalogue: Catalogue, share: float):
        from pyspark.sql import functions as F

        self.spark, self.collections = spark, collections
        frames = []
        self.unknown, self.counts = {}, {}
        has_views = False
        for index, coll in enumerate(collections):
            df = read_dataframe(spark, Dataset.at(coll.location))
            schemas.check_embeddings_columns(df.columns, coll.location.uri)
            view_col = F.col("views") if "views" in df.columns else F.lit(None).cast("array<array<float>>")
            has_views |= "views" in df.columns
            frames.append(
                df.select(
                    F.lit(index).alias("collection"), "path", "label", "split", "embedding", view_col.alias("views")
                )
            )
        data = frames[0]
        for f in frames[1:]:
            data = data.unionByName(f)
        groups = data.groupBy("collection", "label", "split").count().collect()  # small: labels x splits
        per_role: dict[str, set] = {FIT: set(), VAL: set(), TEST: set()}
        validation_in = {r["collection"] for r in groups if r["split"] == schemas.VALIDATION}
        for index, coll in enumerate(collections):
            rows = [r for r in groups if r["collection"] == index]
            left_out = {}
            for r in rows:
                s = catalogue.species_of(r["label"])
                if s is None:
                    left_out[str(r["label"])] = left_out.get(str(r["label"]), 0) + r["count"]
                elif r["split"] in (schemas.TRAIN, schemas.VALIDATION):
                    per_role[FIT].add(s)
            if left_out:
                self.unknown[coll.name] = dict(sorted(left_out.items()))
            self.counts[coll.name] = _count(
                left_out, index in validation_in, share, len(coll.view_names), sum(r["count"] for r in rows)
            )
        self.classes, self.families = _classes(per_role, self.unknown, catalogue)
        self.data = _with_roles(
            spark, data, groups, validation_in, {s: i for i, s in enumerate(self.classes)}, catalogue, share
        )
        self.has_views = has_views
        roles = {
            (r["collection"], r["role"]): r["count"] for r in self.data.groupBy("collection", "role").count().collect()
        }
        for index, coll in enumerate(collections):
            for r in (FIT, VAL, TEST):
                self.counts[coll.name][r] = int(roles.get((index, r), 0))
        self._sizes = {r: sum(v for (c, rr), v in roles.items() if rr == r) for r in (FIT, VAL, TEST)}
        if not self._sizes[VAL]:
            raise FruitlensError("too few train photos per class to carve a validation split")

    def size(self, role: str) -> int:
        return self._sizes[role]

    def training_rows(self, roles: tuple[str, ...]):
        """DataFrame(embedding, label_idx): every view of every photo of `roles` as a row."""
        from pyspark.sql import functions as F

        rows = self.data.filter(F.col("role").isin(list(roles)))
        whole = rows.select("embedding", F.col("y").alias("label_idx"))
        if not self.has_views:
            return whole
        extra = rows.filter(F.col("views").isNotNull()).select(
            F.explode("views").alias("embedding"), F.col("y").alias("label_idx")
        )
        return whole.unionByName(extra)

    def score(self, model, role: str, views: int) -> Scores:
        from pyspark.sql import functions as F

        shared = self.spark.sparkContext.broadcast(model)
        names = {i: c.view_names for i, c in enumerate(self.collections)}

        def score_partition(batches):
            m = shared.value
            for b in batches:
                if not b.num_rows:
                    continue
                x = np.asarray(b.column("embedding").flatten(), np.float32).reshape(b.num_rows, -1)
                other = b.column("views").to_pylist()
                coll = b.column("collection").to_numpy(zero_copy_only=False)
                probs, nov = scored(
                    m,
                    x,
                    [np.asarray(v, np.float32) if v else None for v in other],
                    [names[int(c)] for c in coll],
                    views,
                )
                yield pa.RecordBatch.from_pydict(
                    {
                        "collection": coll,
                        "y": b.column("y"),
                        "probs": pa.array([p.astype(np.float32).tobytes() for p in probs], pa.binary()),
                        "novelty": nov,
                    }
                )

        out = (
            self.data.filter(F.col("role") == role)
            .select("collection", "y", "embedding", "views")
            .mapInArrow(score_partition, "collection int, y int, probs binary, novelty double")
            .collect()
        )
        shared.unpersist()
        n = len(model.classes)
        return Scores(
            np.array([r["y"] for r in out], np.int64),
            np.array([r["collection"] for r in out], np.int64),
            np.stack([np.frombuffer(r["probs"], np.float32) for r in out]).astype(np.float64)
            if out
            else np.zeros((0, n)),
            np.array([r["novelty"] for r in out]),
        )

    def references(self, roles: tuple[str, ...], per_class: int) -> np.ndarray:
        """The driver's choice, picked on the light columns (a window per class over the paths),
        then only the picked photos' embeddings read (a broadcast semi-join: nothing else moves)."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        rows = self.data.filter(F.col("role").isin(list(roles)))
        w = Window.partitionBy("y").orderBy("path")
        ranked = (
            rows.select("collection", "path", "y")
            .withColumn("_i", F.row_number().over(w) - 1)
            .withColumn("_n", F.count("*").over(Window.partitionBy("y")))
        )
        # the driver takes members[int(j * step)] for j < per_class: row i is one when j = floor or
        # ceil of i / step gives floor(j * step) == i (the same double arithmetic)
        step = F.greatest(F.lit(1.0), F.col("_n") / per_class)

        def taken(j):
            return (j < F.least(F.lit(per_class), F.col("_n"))) & (F.floor(j * step) == F.col("_i"))

        picked = ranked.filter(taken(F.floor(F.col("_i") / step)) | taken(F.ceil(F.col("_i") / step))).select(
            "collection", "path"
        )
        out = (
            rows.join(F.broadcast(picked), ["collection", "path"], "left_semi")
            .select("y", "path", "embedding")
            .collect()
        )
        out.sort(key=lambda r: (r["y"], r["path"]))
        return np.array([r["embedding"] for r in out], np.float32)


def _with_roles(spark, data, groups: list, validation_in: set, index_of: dict, catalogue: Catalogue, share: float):
    """The photos of a known class (and every test photo) with their class index `y` and `role`. Where
    a collection without a val/ split cuts each class's train photos: the first path of its last
    `share`, ranked by a window over the light columns only (the embeddings never move)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    truth = sorted(
        {
            (int(r["collection"]), r["label"], index_of.get(catalogue.species_of(r["label"]), -1))
            for r in groups
            if r["label"] is not None
        }
    )  # one row per label: groups has one per split
    own_val = F.col("collection").isin(list(validation_in)) if validation_in else F.lit(False)
    light = data.filter((F.col("split") == schemas.TRAIN) & ~own_val).select("collection", "label", "path")
    by_class = Window.partitionBy("collection", "label").orderBy("path")
    cuts = {
        (r["collection"], r["label"]): r["cut"]
        for r in light.withColumn("_rank", F.percent_rank().over(by_class))
        .filter(F.col("_rank") >= 1.0 - share)
        .groupBy("collection", "label")
        .agg(F.min("path").alias("cut"))
        .collect()
    }  # one row per class
    labels = spark.createDataFrame(
        [(c, label, y, cuts.get((c, label))) for c, label, y in truth] or [(0, "", -1, None)],
        "collection int, label string, y int, cut string",
    )
    data = data.join(F.broadcast(labels), ["collection", "label"], "left").fillna(-1, ["y"])
    carved = F.col("cut").isNotNull() & (F.col("path") >= F.col("cut"))
    role = (
        F.when(F.col("split") == schemas.TEST, TEST)
        .when(F.col("y") < 0, None)
        .when(F.col("split") == schemas.VALIDATION, VAL)
        .when((F.col("split") == schemas.TRAIN) & own_val, FIT)
        .when(F.col("split") == schemas.TRAIN, F.when(carved, VAL).otherwise(FIT))
    )
    return data.withColumn("role", role).filter(F.col("role").isNotNull()).drop("cut")


def load(
    collections: list[Collection], catalogue: Catalogue, share: float, solver: str, spark_session, budget_bytes: int
):
    """DriverData when the rows (all views) fit `budget_bytes` of float32 (`--solver auto`) or the
    driver solver is asked for, else SparkData."""
    rows = sum(c.rows() * len(c.view_names) for c in collections)
    dim = 2048  # an upper bound of the backbones' embeddings, for the estimate
    if solver == "driver" or (solver == "auto" and rows * dim * 4 <= budget_bytes):
        return DriverData(collections, catalogue, share)
    return SparkData(spark_session(), collections, catalogue, share)
