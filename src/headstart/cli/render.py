"""Printing shared by the subcommands: problems, duplicates, metrics, fit summaries."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from headstart.data import Manifest
    from headstart.stats import Metrics, MultiLabelMetrics, TaskMetrics

__all__ = [
    "console",
    "display_path",
    "err_console",
    "show_fit",
    "show_manifest",
    "show_metrics",
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
    if len(manifest.targets) == 1 and not manifest.targets[0].multi_label:
        what = f"{len(manifest.targets[0].classes)} classes"
    else:
        what = ", ".join(f"task {t.describe()}" for t in manifest.targets)
    console.print(
        f"Data {manifest.source or manifest.root}: {len(manifest.samples)} "
        f"{manifest.noun}, {what}; "
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


def show_metrics(per_task: Mapping[str, TaskMetrics], title: str, *, detail: bool = True) -> None:
    """Each task's headline with intervals; with ``detail`` also the per-class (or per-label)
    and confusion tables.  A one-task model's title names no task."""
    for name, metrics in per_task.items():
        heading = title if len(per_task) == 1 else f"{title}, task {name}"
        renderables = metrics_renderables(metrics, heading)
        for renderable in renderables if detail else renderables[:1]:
            console.print(renderable)


def metrics_renderables(metrics: TaskMetrics, title: str) -> list[RenderableType]:
    """A headline and tables for ``rich`` output, for either kind of task."""
    from headstart.stats import MultiLabelMetrics

    if isinstance(metrics, MultiLabelMetrics):
        return _multi_label(metrics, title)
    return _multi_class(metrics, title)


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


def _percent(x: float) -> str:
    return f"{100 * x:.1f}"


def abbreviate(names: Sequence[str], width: int = 8) -> list[str]:
    """Short, unique column labels of at most ``width`` characters.

    A long name keeps its start and ends in "…"; where that makes names collide
    ("t-shirt-long", "t-shirt-short"), their last characters are kept too ("t-shir…g",
    "t-shir…t").  If nothing short is unique, the names are numbered instead.
    """
    short = list(names)
    for tail in range(width - 1):
        head = width - 1 - tail
        short = [
            n if len(n) <= width else n[:head] + "…" + (n[len(n) - tail :] if tail else "")
            for n in names
        ]
        if len(set(short)) == len(short):
            return short
    return [n if len(n) <= width else f"#{i}" for i, n in enumerate(names)]


def _cell_style(diagonal: bool, count: int) -> str:
    if count == 0:
        return "dim"
    return "bold green" if diagonal else "red"


def _multi_class(metrics: Metrics, title: str) -> list[RenderableType]:
    """A headline, a per-class table and a confusion-matrix table for ``rich`` output."""
    acc, f1 = metrics.accuracy, metrics.macro_f1
    headline = Text.assemble(
        (f"{title}: ", "bold"),
        f"accuracy {_percent(acc.value)}% (95% CI {_percent(acc.low)}-{_percent(acc.high)}), ",
        f"macro-F1 {_percent(f1.value)}% (95% CI {_percent(f1.low)}-{_percent(f1.high)}), ",
        f"n={metrics.n}",
        "" if metrics.ece is None else f", ECE {_percent(metrics.ece)}%",
    )
    per_class = Table(title="Per class", title_justify="left")
    per_class.add_column("class")
    for column in ("precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="right")
    for c in metrics.per_class:
        per_class.add_row(
            Text(c.name), _percent(c.precision), _percent(c.recall), _percent(c.f1), str(c.support)
        )
    return [headline, per_class, _confusion(metrics)]


#: More classes than this and a terminal cannot show the confusion matrix: the most frequent
#: confusions are listed instead (the report and metrics.json keep the whole matrix).
MAX_MATRIX_CLASSES = 20


def _confusion(metrics: Metrics) -> Table:
    if len(metrics.classes) > MAX_MATRIX_CLASSES:
        pairs = sorted(
            (
                (-count, metrics.classes[i], metrics.classes[j])
                for i, row in enumerate(metrics.confusion)
                for j, count in enumerate(row)
                if i != j and count
            ),
        )[:MAX_ROWS]
        table = Table(title="Most frequent confusions", title_justify="left")
        for column in ("true", "predicted", "count"):
            table.add_column(column, justify="right" if column == "count" else "left")
        for count, true, predicted in pairs:
            table.add_row(Text(true), Text(predicted), str(-count))
        return table
    confusion = Table(title="Confusion (rows: true, columns: predicted)", title_justify="left")
    confusion.add_column("true \\ pred")
    for short in abbreviate(metrics.classes):
        confusion.add_column(short, justify="right")
    for i, (name, row) in enumerate(zip(metrics.classes, metrics.confusion, strict=True)):
        cells = [Text(str(v), style=_cell_style(i == j, v)) for j, v in enumerate(row)]
        confusion.add_row(Text(name), *cells)
    return confusion


def _multi_label(metrics: MultiLabelMetrics, title: str) -> list[RenderableType]:
    """A headline and a per-label table for ``rich`` output."""
    m = metrics
    headline = Text.assemble(
        (f"{title}: ", "bold"),
        f"mAP {_percent(m.mean_ap.value)}% "
        f"(95% CI {_percent(m.mean_ap.low)}-{_percent(m.mean_ap.high)}), ",
        f"macro-F1 {_percent(m.macro_f1.value)}% "
        f"({_percent(m.macro_f1.low)}-{_percent(m.macro_f1.high)}), ",
        f"micro-F1 {_percent(m.micro_f1.value)}%, subset accuracy {_percent(m.subset_accuracy)}%, ",
        f"n={m.n}",
    )
    table = Table(title="Per label (threshold tuned on val)", title_justify="left")
    table.add_column("label")
    for column in ("AP", "precision", "recall", "F1", "threshold", "support"):
        table.add_column(column, justify="right")
    for x in m.per_label:
        ap = "n/a" if x.average_precision is None else _percent(x.average_precision)
        table.add_row(
            Text(x.name),
            ap,
            _percent(x.precision),
            _percent(x.recall),
            _percent(x.f1),
            f"{x.threshold:.3f}",
            str(x.support),
        )
    return [headline, table]
