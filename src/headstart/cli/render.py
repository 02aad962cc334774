"""Printing shared by the subcommands: problems, duplicates, metrics, fit summaries."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from headstart.data import Manifest
from headstart.evaluate import Metrics, metrics_renderables

__all__ = [
    "console",
    "display_path",
    "err_console",
    "show_fit",
    "show_manifest",
    "show_metrics",
    "show_task_metrics",
]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
MAX_ROWS = 20


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def show_manifest(manifest: Manifest) -> None:
    """Counts per split, then the files left out and the duplicates, as short tables."""
    counts = ", ".join(f"{s} {len(manifest.split(s))}" for s in manifest.splits_present())
    if manifest.is_plain:
        what = f"{len(manifest.classes)} classes"
    else:
        what = ", ".join(
            f"task {t.name}: {len(t.classes)} "
            + ("labels, multi-label" if t.multi_label else "classes")
            for t in manifest.targets
        )
    console.print(
        f"Data {manifest.root}: {len(manifest.samples)} images, {what}; "
        f"split: {manifest.split_source} ({counts})"
    )
    if manifest.problems:
        table = Table(title=f"Left out {len(manifest.problems)} file(s)", title_justify="left")
        table.add_column("file", overflow="fold")
        table.add_column("reason", overflow="fold")
        for p in manifest.problems[:MAX_ROWS]:
            table.add_row(_rel(p.path, manifest.root), p.reason)
        if len(manifest.problems) > MAX_ROWS:
            table.add_row(f"... and {len(manifest.problems) - MAX_ROWS} more", "see problems.csv")
        console.print(table)
    _show_duplicates(manifest)


def _show_duplicates(manifest: Manifest) -> None:
    if not manifest.duplicates:
        return
    cross = [g for g in manifest.duplicates if g.cross_split]
    console.print(f"Exact duplicates: {len(manifest.duplicates)} group(s) of identical files.")
    if cross:
        err_console.print(
            f"[bold red]WARNING: {len(cross)} duplicate group(s) sit in more than one split: "
            "the same image is trained and evaluated on, so the numbers below are optimistic.[/]"
        )
        table = Table(title="Duplicates across splits", title_justify="left")
        table.add_column("files (split)", overflow="fold")
        for g in cross[:MAX_ROWS]:
            files = zip(g.paths, g.splits, strict=True)
            table.add_row("  =  ".join(f"{_rel(p, manifest.root)} ({s})" for p, s in files))
        err_console.print(table)


def show_metrics(metrics: Metrics, title: str, *, detail: bool = True) -> None:
    """The headline with intervals; with ``detail`` also the per-class and confusion tables."""
    renderables = metrics_renderables(metrics, title)
    for renderable in renderables if detail else renderables[:1]:
        console.print(renderable)


def show_task_metrics(per_task: Mapping[str, Any], title: str, *, detail: bool = True) -> None:
    """Each task's metrics (multi-class or multi-label) under ``title``."""
    from headstart.tasks.metrics import MultiLabelMetrics, multilabel_renderables

    for name, metrics in per_task.items():
        heading = f"{title}, task {name}"
        if isinstance(metrics, MultiLabelMetrics):
            renderables = multilabel_renderables(metrics, heading)
            for renderable in renderables if detail else renderables[:1]:
                console.print(renderable)
        else:
            show_metrics(metrics, heading, detail=detail)


def display_path(path: Path) -> str:
    """``path`` relative to the working folder when it is below it, else as given."""
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def show_fit(seconds: dict[str, float], bundle: Path, run_dir: Path) -> None:
    total = sum(seconds.values())
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
    console.print(f"Done in {total:.1f} s ({steps}).")
    console.print(f"Model bundle: {bundle}")
    console.print(
        f"Run folder: {run_dir} (metrics.json, manifest.csv, problems.csv, config.yaml, run.json)"
    )


def is_interactive() -> bool:
    return sys.stderr.isatty()
