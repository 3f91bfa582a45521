"""The "not sure" thresholds, chosen on validation: the species is answered when its probability
reaches the threshold at which answered validation photos are `target` right; else the family when
its probability (its species' summed) reaches the threshold at which the answers of both levels
together stay `target` right in every collection, as many photos answered as can be
(`joint_thresholds`: the family level may use what the species answers leave above the target);
"unlike the training images" above the `target` quantile of the validation photos' novelty (each
collection's photos of a species; the loosest collection's). Plain NumPy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .data import Scores
from .evaluate import species_rows_by_collection
from .model import PortableModel


@dataclass(frozen=True)
class Thresholds:
    """The three thresholds of a model's "not sure" rules (`PortableModel.decide`)."""

    species: float
    family: float  # inf: the family level never answers
    novelty: float
    temperature: float = 1.0  # the classifier's logits divided by it (`with_temperature`); 1: as fit

    def applied_to(self, model: PortableModel) -> PortableModel:
        """`model` with these thresholds and temperature (a copy: `model` is left as it was)."""
        return replace(
            with_temperature(model, self.temperature),
            threshold=self.species,
            family_threshold=self.family,
            novelty_threshold=self.novelty,
        )


# Temperatures tried on validation: the classifier's last layer divided by each.
TEMPERATURES = tuple(float(t) for t in np.geomspace(0.5, 4.0, 13))


def with_temperature(model: PortableModel, t: float) -> PortableModel:
    """`model` with its last layer (weights and intercepts) divided by `t`: its softmax at
    temperature `t`, through the one scoring function (a copy; `t` 1: `model` itself)."""
    if t == 1.0:
        return model
    w, b = model.layers[-1]
    return replace(model, layers=[*model.layers[:-1], (w / t, b / t)], meta={**model.meta, "temperature": t})


def temperature_of(
    model: PortableModel, rescore: Callable[[PortableModel], Scores], grid: tuple[float, ...] = TEMPERATURES
) -> tuple[float, Scores]:
    """The temperature at which validation's log-loss is least (each collection's photos of a class
    of the model, the collections' means averaged: they count alike), and validation scored at it.
    `rescore`: a model -> its validation scores (views averaged as `predict` averages them: the
    temperature is chosen on the probabilities the thresholds then see). Temperature scaling keeps
    each view's best species; averaged views and summed families change."""
    best = (np.inf, 1.0, None)
    for t in grid:
        scores = rescore(with_temperature(model, t))
        losses = []
        for c in np.unique(scores.collection):
            rows = (scores.collection == c) & (scores.y >= 0)
            if rows.any():
                p = scores.probs[rows][np.arange(int(rows.sum())), scores.y[rows]]
                losses.append(float(-np.log(np.maximum(p, 1e-12)).mean()))
        loss = float(np.mean(losses)) if losses else np.inf
        if loss < best[0]:
            best = (loss, t, scores)
    if best[2] is None:
        return 1.0, rescore(model)
    return best[1], best[2]


def calibrate(model: PortableModel, validation: Scores, target: float, temperature: float = 1.0) -> Thresholds:
    """The thresholds of `model` (fit without validation) from its scores on validation (scored
    at `temperature`, which the thresholds carry: `temperature_of`)."""
    novelty = novelty_threshold_of(model, validation, target)
    species, family = joint_thresholds(model, validation, target)
    return Thresholds(species=species, family=family, novelty=novelty, temperature=temperature)


def thresholds(model: PortableModel, scores: Scores, target: float) -> tuple[float, float]:
    """(species, family) thresholds: in every collection, the answered validation photos (of a
    species) at least `target` right at each level: the smallest thresholds every collection keeps. The species
    threshold first (the model has one, so the family level is chosen on the photos each collection
    leaves below it; a collection with none there sets nothing). A photo answered "not a fruit or
    vegetable" is no answer."""
    produce = []
    for rows in species_rows_by_collection(scores, model.not_produce):
        p = scores.probs[rows].copy()
        if model.not_produce >= 0:  # photos it calls no produce are not answered: below every threshold
            p[p.argmax(axis=1) == model.not_produce] = 0.0
        produce.append((p, scores.y[rows]))
    t_species = common_threshold([(y, p) for p, y in produce], target)
    below = [(p, y, p.max(axis=1) < t_species) for p, y in produce]
    family = []
    for p, y, rows in below:
        fam = model.family_probabilities(p[rows])
        if model.not_produce >= 0:
            fam[:, model.family_index[model.not_produce]] = 0.0
        family.append((model.family_index[y[rows]], fam))
    return t_species, common_threshold(family, target)


def joint_thresholds(
    model: PortableModel, scores: Scores, target: float, species: str = "fixed", grid: int = 400
) -> tuple[float, float]:
    """(species, family) thresholds chosen together: in every collection, the answers at either
    level together (a species answer right when the species is, a family answer when the family
    is) at least `target` right, and as many photos answered as can be (the collections' mean
    share). `species`: "fixed", the species threshold is `thresholds`' (species answers alone
    `target` right) and the family level uses what they leave above the target; "floor", no lower
    than that (raising it trades species answers for family answers where that answers more);
    "free", any. Species thresholds are tried among at most `grid` of the photos' winning
    probabilities; for each, the smallest family threshold that keeps every collection at `target`."""
    groups = []
    for rows in species_rows_by_collection(scores, model.not_produce):
        p = scores.probs[rows].copy()
        if model.not_produce >= 0:
            p[p.argmax(axis=1) == model.not_produce] = 0.0
        fam = model.family_probabilities(p)
        fam_p, fam_best = fam.max(axis=1), fam.argmax(axis=1)
        if model.not_produce >= 0:  # `decide`: "not a fruit or vegetable" is no answer at family level either
            fam_p[fam_best == model.family_index[model.not_produce]] = 0.0
        y = scores.y[rows]
        groups.append((p.max(axis=1), p.argmax(axis=1) == y, fam_p, fam_best == model.family_index[y]))
    if not groups:
        return float("inf"), float("inf")
    floor = thresholds(model, scores, target)[0] if species in ("fixed", "floor") else 0.0
    tried = np.unique(np.concatenate([g[0] for g in groups]))
    tried = tried[(tried >= floor) & (tried > 0)]
    if len(tried) > grid:
        tried = np.unique(tried[np.linspace(0, len(tried) - 1, grid).round().astype(int)])
    tried = np.unique(np.r_[tried, [floor] if floor > 0 else [], np.nextafter(max(g[0].max() for g in groups), 2.0)])
    if species == "fixed":
        tried = np.array([floor])
    best, best_key = (float("inf"), float("inf")), (-1.0, -1.0)
    for t_s in tried:
        sure = [(best_p >= t_s) for best_p, *_ in groups]
        done = [(int(s.sum()), int((s & right).sum())) for s, (_, right, _, _) in zip(sure, groups)]
        family = [(fam_right[~s], fam_p[~s]) for s, (_, _, fam_p, fam_right) in zip(sure, groups)]
        t_f = _threshold_given(family, done, target)
        if t_f is None:
            continue
        answered = [(a + int((fp >= t_f).sum())) / len(g[0]) for (a, _), (_, fp), g in zip(done, family, groups)]
        key = (float(np.mean(answered)), float(np.mean([a / len(g[0]) for (a, _), g in zip(done, groups)])))
        if key > best_key:
            best, best_key = (float(t_s), t_f), key
    return best


def _threshold_given(
    family: list[tuple[np.ndarray, np.ndarray]], done: list[tuple[int, int]], target: float
) -> float | None:
    """The smallest family threshold at which, in every collection, its species answers (`done`:
    answered, right) and its family answers (`family`: right?, family probability of the photos
    left) are together `target` right; inf (no family answer) when only that does; None when not even."""
    candidates = np.unique(np.concatenate([p for _, p in family] + [np.array([np.inf])]))
    candidates = candidates[candidates > 0]
    ok = np.ones(len(candidates), bool)
    for (right, p), (a, r) in zip(family, done):
        order = np.argsort(p)
        ascending, right_sorted = p[order], right[order]
        right_from = np.r_[np.cumsum(right_sorted[::-1])[::-1], 0]
        first = np.searchsorted(ascending, candidates, side="left")
        answered = len(p) - first
        ok &= r + right_from[first] >= target * (a + answered) - 1e-9
    feasible = candidates[ok]
    return float(feasible[0]) if len(feasible) else None


def common_threshold(groups: list[tuple[np.ndarray, np.ndarray]], target: float) -> float:
    """The smallest winning-probability threshold at which every group's answered photos ((labels,
    probabilities) of one collection) are at least `target` right (a group with none answered
    sets nothing); above every photo when only answering none would do; `inf` with no photos."""
    groups = [(y, p) for y, p in groups if len(y)]
    if not groups:
        return float("inf")
    candidates = np.unique(np.concatenate([p.max(axis=1) for _, p in groups]))
    ok = np.ones(len(candidates), bool)
    for y, p in groups:
        best = p.max(axis=1)
        order = np.argsort(best)
        ascending, right = best[order], (p.argmax(axis=1) == y)[order]
        right_from = np.r_[np.cumsum(right[::-1])[::-1], 0]  # right answers among photos order[i:]
        first = np.searchsorted(ascending, candidates, side="left")
        answered = len(y) - first
        ok &= (answered == 0) | (right_from[first] >= target * answered)
    feasible = candidates[ok & (candidates > 0)]  # 0: photos called "not produce", never answered
    return float(feasible[0]) if len(feasible) else float(np.nextafter(candidates[-1], 2.0))


def novelty_threshold_of(model: PortableModel, scores: Scores, target: float) -> float:
    """The novelty above which a photo is "unlike the training images": in every collection, at
    least `target` of the validation photos of a species stay below it (each collection's
    `target` quantile; the loosest). Shop photos lie farther from their references than turntable
    frames do from theirs: one quantile over every photo would send most shop photos to "not sure"."""
    quantiles = [
        float(np.quantile(scores.novelty[rows], target))
        for rows in species_rows_by_collection(scores, model.not_produce)
    ]
    return max(quantiles) if quantiles else np.inf
