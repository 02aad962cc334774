"""``headstart evaluate MODEL DATA``: metrics with 95% bootstrap intervals."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from headstart.cli.options import TTA_HELP
from headstart.cli.render import console, show_manifest, show_metrics, show_task_metrics
from headstart.evaluation import evaluate_data
from headstart.fsutil import atomic_write_text


def command(
    model: Path = typer.Argument(..., help="Model bundle folder (RUN/model)."),
    data: Path = typer.Argument(
        ..., help="Labelled images: class folders (or split folders) or a CSV."
    ),
    split: str | None = typer.Option(
        None, "--split", help="With split folders: which one (default test, else val)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Also write the metrics as JSON here."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    tta: str = typer.Option("none", "--tta", help=TTA_HELP),
) -> None:
    """Evaluate a model on labelled images: accuracy, macro-F1, per-class, confusion matrix."""
    result = evaluate_data(model, data, split=split, progress=not quiet, tta=tta)
    show_manifest(result.manifest)
    if result.metrics is None:
        show_task_metrics(result.task_metrics, f"{result.split} ({data})")
        record = {"tasks": {t: m.to_dict() for t, m in result.task_metrics.items()}}
    else:
        show_metrics(result.metrics, f"{result.split} ({data})")
        record = result.metrics.to_dict()
    if output is not None:
        atomic_write_text(output, json.dumps(record, indent=2) + "\n")
        console.print(f"Metrics written to {output}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(command)
