"""``headstart calibrate MODEL DATA``: temperature scaling of every task (or one) stored in the
bundle; also the near-duplicate table that ``fit`` prints (kept here with the other
evaluation-trust output)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from headstart.cli.options import load_model
from headstart.cli.render import MAX_ROWS, console, err_console

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from headstart.data import Manifest, Task
    from headstart.data.leakage import NearDuplicate
    from headstart.studies.calibrate import TaskCalibration


def show_near_duplicates(pairs: list[NearDuplicate], manifest: Manifest) -> None:
    """Warn with a table of cross-split near-duplicate pairs."""
    err_console.print(
        f"[bold red]WARNING: {len(pairs)} near-duplicate pair(s) across splits: evaluation "
        "numbers are optimistic (pairs in near_duplicates.csv; --dedupe drops the later copy).[/]"
    )
    table = Table(title="Near-duplicates across splits", title_justify="left")
    text = manifest.modality == "text"
    first, confirm = ("text", "characters") if text else ("image", "pixels")
    for name in (f"{first} (split)", "near-duplicate (split)", "cosine", confirm):
        table.add_column(name, overflow="fold")
    texts = {s.path: s.text for s in manifest.samples} if text else {}

    def shown(path: Path) -> str:
        return repr(texts[path]) if path in texts else manifest.relative(path)

    for d in pairs[:MAX_ROWS]:
        table.add_row(
            f"{shown(d.earlier)} ({d.earlier_split})",
            f"{shown(d.later)} ({d.later_split})",
            f"{d.cosine:.3f}",
            f"{d.pixel_correlation:.2f}",
        )
    err_console.print(table)


def _show_task(
    fitted: TaskCalibration, task: Task, proba: NDArray[Any], truth: NDArray[Any], named: bool
) -> None:
    """One task's temperature(s), before/after NLL and ECE, and its reliability (multi-class)
    or per-label temperatures (multi-label)."""
    from headstart.stats.temperature import reliability_rows

    where = f"({fitted.data}, {fitted.split})"
    prefix = f"Task {task.name}: " if named else ""
    if task.multi_label:
        console.print(
            f"{prefix}{len(fitted.temperatures)} temperatures (one per label) fitted on "
            f"{fitted.n} images {where}"
        )
        console.print(
            f"mean binary NLL {fitted.nll_before:.4f} -> {fitted.nll_after:.4f}; "
            f"mean per-label ECE {100 * fitted.ece_before:.2f}% -> {100 * fitted.ece_after:.2f}%"
        )
        table = Table(title="Temperature per label", title_justify="left")
        table.add_column("label")
        table.add_column("temperature", justify="right")
        for label, t in zip(task.classes, fitted.temperatures, strict=True):
            table.add_row(label, f"{t:.3f}")
        console.print(table)
        return
    console.print(
        f"{prefix}Temperature {fitted.temperature:.3f} fitted on {fitted.n} images {where}"
    )
    console.print(
        f"NLL {fitted.nll_before:.4f} -> {fitted.nll_after:.4f}; "
        f"ECE {100 * fitted.ece_before:.2f}% -> {100 * fitted.ece_after:.2f}%"
    )
    title = "Reliability before calibration" + (f", task {task.name}" if named else "")
    table = Table(title=title, title_justify="left")
    for name in ("confidence bin", "images", "mean confidence", "accuracy"):
        table.add_column(name, justify="right")
    for label, count, conf, acc in reliability_rows(proba, truth):
        table.add_row(label, str(count), f"{100 * conf:.1f}%", f"{100 * acc:.1f}%")
    console.print(table)


def command(
    model: Path = typer.Argument(..., help="Model bundle folder (RUN/model)."),
    data: Path = typer.Argument(..., help="Labelled images (split folders, class folders or CSV)."),
    task: str | None = typer.Option(
        None, "--task", help="Calibrate only this task (default: every task; others keep theirs)."
    ),
    split: str = typer.Option("val", "--split", help="With split folders: which one to use."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config value (extract.cache_dir)."
    ),
) -> None:
    """Fit temperatures on labelled data and store them in the bundle: one per multi-class
    task, one per label of a multi-label task (predictions keep their labels; probabilities
    become calibrated)."""
    from headstart.studies.calibrate import calibrate_bundle  # the library: when it runs

    loaded = load_model(model, config, set_)
    result = calibrate_bundle(loaded, data, task=task, split=split, progress=not quiet)
    named = len(loaded.tasks) > 1
    for name, fitted in result.tasks.items():
        t = loaded.task(name)
        _show_task(fitted, t, result.proba[name], result.truth[name], named)
    console.print(f"Bundle updated: {model}")


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to the app."""
    app.command("calibrate")(command)
