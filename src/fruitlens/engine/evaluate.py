"""How a model does on scored photos (`data.Scores`): accuracy, macro-F1 and confusion, the answers its
rules give at each level, per collection. Plain NumPy, for train's choice and report."""

from __future__ import annotations

import numpy as np

from ..catalogue import NOT_PRODUCE
from .data import Scores
from .model import PortableModel


def metrics(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    n_classes = len(classes)
    known = y >= 0
    y, probs = y[known], probs[known]
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (y, pred), 1)
    tp = np.diag(confusion).astype(float)
    precision = np.divide(tp, confusion.sum(axis=0), out=np.zeros(n_classes), where=confusion.sum(axis=0) > 0)
    recall = np.divide(tp, confusion.sum(axis=1), out=np.zeros(n_classes), where=confusion.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=(precision + recall) > 0)
    present = confusion.sum(axis=1) > 0
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    pairs = [(int(off[i, j]), classes[i], classes[j]) for i, j in zip(*np.nonzero(off))]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return {
        "rows": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "top5_accuracy": float((top5 == y[:, None]).any(axis=1).mean()) if len(y) else None,
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "per_class": {
            c: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "support": int(confusion[i].sum()),
            }
            for i, c in enumerate(classes)
            if present[i]
        },
        "most_confused": [{"true": t, "predicted": p, "count": n} for n, t, p in pairs[:20]],
        "_confusion": confusion,
    }


def answers(model: PortableModel, y: np.ndarray, probs: np.ndarray, nov: np.ndarray) -> dict:
    """What the rules answer and how often it is right, per level (species and family)."""
    level, fam, _ = model.decide(probs, nov)
    n = len(y)
    true_fam = np.where(y >= 0, model.family_index[np.clip(y, 0, None)], -1)
    species_right = (level == 2) & (probs.argmax(axis=1) == y)
    family_right = (level >= 1) & (fam == true_fam)  # a species answer's family counts at family level
    answered = level > 0
    return {
        "photos": int(n),
        "answered": round(float(answered.mean()), 4) if n else None,
        "answered_species": round(float((level == 2).mean()), 4) if n else None,
        "answered_family_only": round(float((level == 1).mean()), 4) if n else None,
        "answers_right": round(
            float(((level == 2) & species_right | (level == 1) & family_right).sum() / max(1, answered.sum())), 4
        )
        if answered.any()
        else None,
        "species_answers_right": round(float(species_right.sum() / max(1, (level == 2).sum())), 4)
        if (level == 2).any()
        else None,
        "family_answers_right": round(float(family_right[level == 1].mean()), 4) if (level == 1).any() else None,
        "not_sure": round(float((level == 0).mean()), 4) if n else None,
    }


def produce_answers(model: PortableModel, scores: Scores) -> dict:
    """`answers` on the photos of a species (known, and not NOT_PRODUCE)."""
    keep = of_a_species(scores, model.not_produce)
    return answers(model, scores.y[keep], scores.probs[keep], scores.novelty[keep])


def per_collection(model: PortableModel, scores: Scores, names: list[str]) -> dict:
    """Accuracy (species and family, from the labels through the catalogue) and answers per
    collection, counted as `classify` counts them: the photos of a species (not "(not produce)");
    the family right when the best species' family is the photo's."""
    out = {}
    probs, nov = scores.probs, scores.novelty
    for c, name in enumerate(names):
        rows = scores.collection == c
        known = of_a_species(scores, model.not_produce)[rows]
        y = scores.y[rows]
        if not rows.any():
            continue
        p = probs[rows][known]
        yk = y[known]
        best = p.argmax(axis=1)
        out[name] = {
            "photos": int(rows.sum()),
            "photos_of_a_known_species": int(known.sum()),
            "species_accuracy": float((best == yk).mean()) if len(yk) else None,
            "family_accuracy": float((model.family_index[best] == model.family_index[yk]).mean()) if len(yk) else None,
            "answers": answers(model, yk, p, nov[rows][known]) if len(yk) else None,
        }
    return out


def of_a_species(scores: Scores, not_produce: int) -> np.ndarray:
    """The photos of a species: of a class of the model, and not NOT_PRODUCE (index `not_produce`, -1: none)."""
    return (scores.y >= 0) & (scores.y != not_produce)


def species_rows_by_collection(scores: Scores, not_produce: int):
    """Each collection's photos of a species (a mask), for the collections that have any."""
    species = of_a_species(scores, not_produce)
    for c in np.unique(scores.collection):
        rows = species & (scores.collection == c)
        if rows.any():
            yield rows


def not_produce_report(model: PortableModel, by_role: dict) -> dict | None:
    """How often photos of no fruit or vegetable (NOT_PRODUCE) get "not sure", per split."""
    if model.not_produce < 0:
        return None
    out = {}
    for role, scores in by_role.items():
        rows = scores.y == model.not_produce
        if rows.any():
            level, _, _ = model.decide(scores.probs[rows], scores.novelty[rows])
            out[role] = {"photos": int(rows.sum()), "not_sure": round(float((level == 0).mean()), 4)}
    return out


def macro_accuracy(scores: Scores, classes: list[str]) -> float:
    """The mean over collections of the species accuracy (photos of a known class)."""
    not_produce = classes.index(NOT_PRODUCE) if NOT_PRODUCE in classes else -1
    accs = [
        float((scores.probs[rows].argmax(axis=1) == scores.y[rows]).mean())
        for rows in species_rows_by_collection(scores, not_produce)
    ]
    return float(np.mean(accs)) if accs else 0.0
