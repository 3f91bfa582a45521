"""train's report, made from the stages' results (engine/stages.py): `report.json`'s dict, the
files beside it (`per_class.csv`, `confusion.png`) and the summary printed at the end."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np
from rich.console import Console

from ..config import TrainConfig
from ..report import write_confusion_png
from .calibrate import Thresholds
from .data import FIT, TEST, VAL, views_in, views_note
from .evaluate import not_produce_report, per_collection, produce_answers
from .stages import CandidateResults, Choice, Fitted, Prepared, Tested, candidate_params


def train_report(
    cfg: TrainConfig,
    prepared: Prepared,
    results: CandidateResults,
    choice: Choice,
    thresholds: Thresholds,
    tested: Tested,
) -> dict:
    """report.json: the settings, the data, each candidate on validation, the chosen one on test, its
    "not sure" rules, the stages' seconds (train adds save_s and total_s to the dict it returns)."""
    data, test = prepared.data, tested.test
    return {
        "config": {**asdict(cfg), "candidates": [c.name for c in prepared.candidates]},
        "classes": len(prepared.classes),
        "catalogue": {
            "source": prepared.catalogue.source,
            "species": len(prepared.classes),
            "families": len(set(prepared.families)),
        },
        "embedding_dim": prepared.dim,
        "pca_k": prepared.solver.pca_k,
        "solver": data.kind,
        "blas": prepared.blas,
        "collections": data.counts,
        "left_out_labels": data.unknown,
        "rows": {
            "fit": data.size(FIT),
            "fit_rows_with_views": prepared.fit_rows,
            "validation": data.size(VAL),
            "train": data.size(FIT) + data.size(VAL),
            "test": int((test.y >= 0).sum()),
            "test_unknown_label": int((test.y < 0).sum()),
        },
        "candidates": [_candidate(f) for f in results.fitted],
        "chosen": _chosen(cfg, prepared, choice, thresholds, tested),
        "timings": {
            k: round(v, 1)
            for k, v in (
                ("read_s", prepared.read_s),
                ("scaler_pca_s", prepared.scaler_pca_s),
                ("refit_s", tested.refit_s),
            )
        },
    }


def _candidate(fitted: Fitted) -> dict:
    m = fitted.validation_metrics
    return {
        "candidate": fitted.candidate.name,
        "model": fitted.candidate.kind,
        "params": candidate_params(fitted.candidate),
        "seconds": round(fitted.fit.seconds, 1),
        "iterations": fitted.fit.iterations,
        "validation_accuracy": m["accuracy"],
        "validation_accuracy_is": "the mean of the collections' species accuracies",
        "validation_macro_f1": m["macro_f1"],
        "validation_top5": m["top5_accuracy"],
        "predict_views": fitted.views,
        "validation_accuracy_by_views": {str(v): round(mv["accuracy"], 4) for v, mv in fitted.by_views.items()},
    }


def _chosen(cfg: TrainConfig, prepared: Prepared, choice: Choice, thresholds: Thresholds, tested: Tested) -> dict:
    validation_model = thresholds.applied_to(choice.model)  # the model the thresholds were calibrated on
    val_answers = produce_answers(validation_model, choice.validation)
    model, test = tested.model, tested.test
    return {
        "candidate": choice.candidate.name,
        "model": choice.candidate.kind,
        "params": candidate_params(choice.candidate),
        "chosen_on": "validation accuracy (the collections' mean, then macro-F1)",
        "predict_views": choice.views,
        "predict_views_among": views_in(prepared.collections),
        "predict_views_note": views_note(prepared.collections),
        "test": {k: v for k, v in tested.metrics.items() if not k.startswith("_")},
        "test_by_collection": per_collection(model, test, prepared.names),
        "validation_by_collection": per_collection(validation_model, choice.validation, prepared.names),
        "not_sure": {
            "thresholds_from": "the chosen model fit on the fit split, scored on validation; applied unchanged to "
            "the model refit on all of train",
            "target_precision": cfg.target_precision,
            "rule": "the smallest species threshold at which every collection's validation species answers are at "
            "least target_precision right, then the smallest family threshold at which every collection's answers "
            "of both levels together are (a family answer right when the family is); novelty: the loosest "
            "collection's target_precision quantile",
            "temperature": thresholds.temperature,
            "temperature_is": "the classifier's logits divided by it, chosen on validation (least log-loss)",
            "threshold": thresholds.species,
            "validation_precision": val_answers["species_answers_right"],
            "validation_coverage": val_answers["answered_species"],
            "family_threshold": thresholds.family if np.isfinite(thresholds.family) else None,
            "novelty_threshold": thresholds.novelty,
            "validation": val_answers,
            "test": produce_answers(model, test) if (test.y >= 0).any() else None,
            "not_produce": not_produce_report(model, {VAL: choice.validation, TEST: test}),
        },
    }


def write_report_files(folder: str, report: dict, confusion: np.ndarray, classes: list[str]) -> None:
    """per_class.csv, confusion.png and report.json in the model folder."""
    with open(os.path.join(folder, "per_class.csv"), "w") as f:
        f.write("class,precision,recall,support\n")
        for c, v in report["chosen"]["test"]["per_class"].items():
            f.write(f'"{c}",{v["precision"]},{v["recall"]},{v["support"]}\n')
    accuracy = report["chosen"]["test"]["accuracy"]
    write_confusion_png(
        os.path.join(folder, "confusion.png"),
        confusion,
        classes,
        f"{report['chosen']['candidate']}: test accuracy "
        + (f"{accuracy:.2%}" if accuracy is not None else "n/a (no test rows)"),
    )
    with open(os.path.join(folder, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)


def print_train_summary(report: dict, output) -> None:
    chosen = report["chosen"]
    test = chosen["test"]
    ns = chosen["not_sure"]
    rows = report["rows"]
    lines = [
        f"[bold green]fruitlens train[/] -> {output}",
        f"  {rows['train']:,} train photos ({rows['validation']:,} for validation; "
        f"{rows['fit_rows_with_views']:,} rows with their views), {rows['test']:,} test photos, "
        f"{report['classes']} classes ({report['catalogue']['families']} families; "
        f"catalogue: {report['catalogue']['source']}); "
        f"solver: {report['solver']}, BLAS: {', '.join(f'{k} {v}' for k, v in report['blas'].items())}",
    ]
    for name, left in report.get("left_out_labels", {}).items():
        lines.append(f"  {name}: {sum(left.values()):,} photos of {len(left)} labels not in the catalogue left out")
    for c in report["candidates"]:
        mark = "*" if c["candidate"] == chosen["candidate"] else " "
        lines.append(
            f"  {mark} {c['candidate']:<16} validation {c['validation_accuracy']:.2%} "
            f"({c['predict_views']} view{'s' if c['predict_views'] > 1 else ''}), {c['seconds']:.0f}s, "
            f"{c['iterations']} iterations"
        )
    if test["accuracy"] is not None:
        lines.append(
            f"  chosen {chosen['candidate']} (on validation): test accuracy {test['accuracy']:.2%}, "
            f"top-5 {test['top5_accuracy']:.2%}, macro-F1 {test['macro_f1']:.3f}"
        )
        for name, c in chosen["test_by_collection"].items():
            if c["species_accuracy"] is not None:
                lines.append(
                    f"    {name}: species {c['species_accuracy']:.2%}, family {c['family_accuracy']:.2%} "
                    f"of {c['photos_of_a_known_species']:,} photos"
                )
        t = ns["test"]
        if t and t["answered"] is not None:
            right = f", {t['answers_right']:.2%} of them right" if t["answers_right"] is not None else ""
            lines.append(
                f"  answers {t['answered']:.1%} of test ({t['answered_species']:.1%} the species, "
                f"{t['answered_family_only']:.1%} only the family){right}; not sure {t['not_sure']:.1%}"
            )
    lines.append(
        f"  report: {(output / 'report.json').uri}, confusion.png, per_class.csv, catalogue.csv "
        f"({report['timings']['total_s']:.0f}s)"
    )
    Console(highlight=False, soft_wrap=True).print("\n".join(lines))
