"""The "not sure" thresholds, chosen on validation: the species is answered when its probability
reaches the threshold at which answered validation photos are `target` right; else the family when
its probability (its species' summed) reaches the threshold at which those family answers are as
precise; "unlike the training images" above the `target` quantile of the validation photos'
novelty (each collection's photos of a species; the loosest collection's). Plain NumPy."""

from __future__ import annotations

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

    def applied_to(self, model: PortableModel) -> PortableModel:
        """`model` with these thresholds (a copy: `model` is left as it was)."""
        return replace(model, threshold=self.species, family_threshold=self.family, novelty_threshold=self.novelty)


def calibrate(model: PortableModel, validation: Scores, target: float) -> Thresholds:
    """The thresholds of `model` (fit without validation) from its scores on validation."""
    novelty = novelty_threshold_of(model, validation, target)
    species, family = thresholds(model, validation, target)
    return Thresholds(species=species, family=family, novelty=novelty)


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
