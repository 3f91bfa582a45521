"""Logger/report: report.json, scree.png and the short human summary printed at the end."""

from __future__ import annotations

import io
import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import numpy as np
from rich.console import Console

from . import __version__
from .storage.location import Location


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict:
    out = {"fruitlens": __version__, "python": platform.python_version()}
    for name in ("pyspark", "ai-edge-litert", "pillow", "numpy", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def featurize_section(result, spec) -> dict:
    stats = result.stats
    wall = result.timings.get("embed_wall_s", 0.0)
    total = sum(result.timings.values())
    return {
        "inputs": {
            "images_found": result.found,
            "other_files_skipped": dict(result.listing.skipped),
            "unreadable_in_listing": len(result.listing.problems),
            "listed": result.listing_mode,
        },
        "incremental": {**result.changes, "notes": result.notes},
        "ok": result.ok,
        "errors": result.errors,
        "errors_by_reason": result.errors_by_reason,
        "backbone": {
            "name": spec.name,
            "description": spec.description,
            "file": spec.file.filename,
            "sha256": spec.file.sha256,
            "source_url": spec.file.url,
            "license": spec.file.license,
            "embedding_dim": spec.embedding_dim,
            "input_size": list(spec.input_size),
            "loads": stats.model_loads,
        },
        "partitions": result.partitions,
        "stages": {
            "list": {"wall_s": round(result.timings.get("list_s", 0.0), 3)},
            "plan": {"wall_s": round(result.timings.get("plan_s", 0.0), 3)},
            "embed": {
                "wall_s": round(wall, 3),
                "images": result.changes.get("embedded", result.found),
                "images_per_s": round(result.changes.get("embedded", result.found) / wall, 1) if wall else None,
                "task_seconds": {
                    "read": round(stats.read_s, 3),
                    "decode_resize": round(stats.decode_s, 3),
                    "infer": round(stats.infer_s, 3),
                    "write": round(stats.write_s, 3),
                    "model_load": round(stats.model_load_s, 3),
                    # CPU seconds of the same threads (wall minus the time other threads had the core)
                    "read_decode_cpu": round(stats.read_decode_cpu_s, 3),
                    "infer_cpu": round(stats.infer_cpu_s, 3),
                },
            },
            "rewrite": {"wall_s": round(result.timings.get("rewrite_s", 0.0), 3)},
            "publish": {"wall_s": round(result.timings.get("publish_s", 0.0), 3)},
            "total": {
                "wall_s": round(total, 3),
                "images_per_s": round(result.found / total, 1) if total else None,
            },
        },
    }


def reduce_section(result, variance_target) -> dict:
    cumulative = result.cumulative
    return {
        "rows": result.rows,
        "fit_rows": result.fit_rows,
        "fit_on": result.fit_on,
        "k": result.k,
        "variance_target": variance_target,
        "explained_variance_at_k": round(result.explained_at_k, 6),
        "stages": {name.removesuffix("_s"): {"wall_s": round(v, 3)} for name, v in result.timings.items()},
        "explained_variance": [round(v, 8) for v in result.explained_variance],
        "cumulative_explained_variance": [round(v, 8) for v in cumulative],
    }


def write_explained_variance_csv(where: Location, result) -> None:
    lines = ["component,explained_variance,cumulative"]
    for i, (v, c) in enumerate(zip(result.explained_variance, result.cumulative), start=1):
        lines.append(f"{i},{v:.8g},{c:.8g}")
    where.write_bytes(("\n".join(lines) + "\n").encode())


def write_scree(where: Location, result, variance_target: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cumulative = np.asarray(result.cumulative)
    x = np.arange(1, len(cumulative) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(x, cumulative, color="#2a7ab9", lw=2, label="cumulative explained variance")
    ax.bar(x, result.explained_variance, color="#9cc3e4", width=1.0, label="per component")
    ax.axvline(result.k, color="#d1495b", ls="--", lw=1.5, label=f"k = {result.k} ({result.explained_at_k:.1%})")
    if variance_target is not None:
        ax.axhline(variance_target, color="#999999", ls=":", lw=1, label=f"target {variance_target:.0%}")
    ax.set_xscale("log")
    ax.set_xlim(1, len(cumulative))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("principal component (log scale)")
    ax.set_ylabel("explained variance (share)")
    ax.set_title(
        f"PCA of embeddings: fit on {result.fit_rows:,} rows ({result.fit_on})"
        if result.fit_rows
        else "PCA of embeddings: the model reused (--reuse-model)"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    where.write_bytes(buf.getvalue())


def write_report(output: Location, report: dict) -> Location:
    where = output / "report.json"
    where.write_json(report)
    return where


def print_summary(report: dict, output: Location) -> None:
    lines = [f"[bold green]fruitlens {report['command']}[/] -> {output}"]
    feat = report.get("featurize")
    if feat:
        stages = feat["stages"]
        lines.append(
            f"  images: {feat['inputs']['images_found']:,} found, {feat['ok']:,} with embeddings, "
            f"{feat['errors']:,} errors"
            + (f" ({', '.join(f'{k}: {v}' for k, v in feat['errors_by_reason'].items())})" if feat["errors"] else "")
        )
        inc = feat["incremental"]
        lines.append(
            f"  this run: {inc['new']:,} new, {inc['changed']:,} changed, {inc['removed']:,} removed, "
            f"{inc['unchanged']:,} unchanged (kept)"
            + (f", {inc['retried']:,} retried" if inc["retried"] else "")
            + (
                f"; resumed {inc['resumed_rows']:,} rows from {inc['resumed_files']} part files of an interrupted run"
                if inc["resumed_rows"]
                else ""
            )
            + f"; {inc['embedded']:,} read and embedded"
        )
        for note in inc["notes"]:
            lines.append(f"  note: {note}")
        skipped = sum(feat["inputs"]["other_files_skipped"].values())
        if skipped:
            lines.append(f"  other files skipped (not jpg/jpeg/png/webp/bmp): {skipped:,}")
        lines.append(
            f"  embed: {stages['embed']['images_per_s'] or 0:,.1f} images/s "
            f"({stages['embed']['wall_s']:.1f}s incl. writing; list {stages['list']['wall_s']:.1f}s, "
            f"publish {stages['publish']['wall_s']:.1f}s)"
        )
    red = report.get("reduce")
    if red:
        fitted = (
            f"fit on {red['fit_rows']:,} {red['fit_on']} rows"
            if red["fit_rows"]
            else "the model OUTPUT already held (--reuse-model)"
        )
        lines.append(
            f"  PCA: k = {red['k']} components, {red['explained_variance_at_k']:.1%} of variance, "
            f"{fitted}, {red['rows']:,} rows projected"
        )
    lines.append(f"  report: {(output / 'report.json').uri}")
    Console(highlight=False, soft_wrap=True).print("\n".join(lines))  # stdout; progress is on stderr


def write_confusion_png(path: str, confusion, classes: list[str], title: str) -> None:
    """A confusion picture a person can read with 100+ classes: only the classes involved in a
    mistake (rows: true, columns: predicted, share of the true class), plus the total count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    off = confusion.copy()
    np.fill_diagonal(off, 0)
    involved = sorted(set(np.nonzero(off.sum(axis=1))[0]) | set(np.nonzero(off.sum(axis=0))[0]))
    if not involved:
        fig, ax = plt.subplots(figsize=(6, 2), dpi=120)
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}\nno mistakes on {int(confusion.sum()):,} images", ha="center", va="center")
    else:
        sub = confusion[np.ix_(involved, involved)].astype(float)
        rows = confusion[involved].sum(axis=1, keepdims=True).astype(float)
        share = np.divide(sub, rows, out=np.zeros_like(sub), where=rows > 0)
        n = len(involved)
        size = max(5.0, 0.28 * n + 3)
        fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=110)
        im = ax.imshow(share, cmap="magma_r", vmin=0, vmax=1)
        names = [classes[i] for i in involved]
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        for i in range(n):
            for j in range(n):
                if sub[i, j] and i != j:
                    ax.text(j, i, int(sub[i, j]), ha="center", va="center", fontsize=6, color="#1f77b4")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}\n{n} of {len(classes)} classes involved in a mistake (numbers: images)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.03, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
