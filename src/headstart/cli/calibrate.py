"""``headstart calibrate MODEL DATA``: temperature scaling stored in the bundle; also the
near-duplicate table that ``fit`` prints (kept here with the other evaluation-trust output)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from headstart.cli.render import MAX_ROWS, console, err_console

if TYPE_CHECKING:
    from headstart.data import Manifest
    from headstart.data.leakage import NearDuplicate


def show_near_duplicates(pairs: list[NearDuplicate], manifest: Manifest) -> None:
    """Warn with a table of cross-split near-duplicate pairs."""
    err_console.print(
        f"[bold red]WARNING: {len(pairs)} near-duplicate pair(s) across splits: evaluation "
        "numbers are optimistic (pairs in near_duplicates.csv; --dedupe drops the later copy).[/]"
    )
    table = Table(title="Near-duplicates across splits", title_justify="left")
    for name in ("image (split)", "near-duplicate (split)", "cosine", "pixels"):
        table.add_column(name, overflow="fold")
    for d in pairs[:MAX_ROWS]:
        table.add_row(
            f"{manifest.relative(d.earlier)} ({d.earlier_split})",
            f"{manifest.relative(d.later)} ({d.later_split})",
            f"{d.cosine:.3f}",
            f"{d.pixel_correlation:.2f}",
        )
    err_console.print(table)


def command(
    model: Path = typer.Argument(..., help="Model bundle folder (RUN/model)."),
    data: Path = typer.Argument(..., help="Labelled images (split folders, class folders or CSV)."),
    split: str = typer.Option("val", "--split", help="With split folders: which one to use."),
) -> None:
    """Fit a temperature on labelled data and store it in the bundle (predictions keep their
    class; probabilities become calibrated)."""
    from headstart.stats.temperature import reliability_rows
    from headstart.studies.calibrate import calibrate_bundle  # the library: when it runs

    result, proba, y = calibrate_bundle(model, data, split=split)
    console.print(
        f"Temperature {result.temperature:.3f} fitted on {result.n} images ({data}, {result.split})"
    )
    console.print(
        f"NLL {result.nll_before:.4f} -> {result.nll_after:.4f}; "
        f"ECE {100 * result.ece_before:.2f}% -> {100 * result.ece_after:.2f}%"
    )
    table = Table(title="Reliability before calibration", title_justify="left")
    for name in ("confidence bin", "images", "mean confidence", "accuracy"):
        table.add_column(name, justify="right")
    for label, count, conf, acc in reliability_rows(proba, y):
        table.add_row(label, str(count), f"{100 * conf:.1f}%", f"{100 * acc:.1f}%")
    console.print(table)
    console.print(f"Bundle updated: {model}")


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to the app."""
    app.command("calibrate")(command)
