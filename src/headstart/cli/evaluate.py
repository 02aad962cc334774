"""``headstart evaluate MODEL DATA``: metrics of every task with 95% bootstrap intervals."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from headstart.cli.options import TTA_HELP, load_model
from headstart.cli.render import console, show_manifest, show_metrics


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
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config value (extract.cache_dir)."
    ),
) -> None:
    """Evaluate a model on labelled images: per task accuracy and macro-F1 (mAP for a
    multi-label task), per class, confusion matrix."""
    from headstart.evaluation import evaluate_data  # the library: when the command runs
    from headstart.fsutil import atomic_write_text

    result = evaluate_data(
        load_model(model, config, set_), data, split=split, progress=not quiet, tta=tta
    )
    show_manifest(result.manifest)
    show_metrics(result.metrics, f"{result.split} ({data})")
    if output is not None:
        record = {"tasks": {t: m.to_dict() for t, m in result.metrics.items()}}
        atomic_write_text(output, json.dumps(record, indent=2) + "\n")
        console.print(f"Metrics written to {output}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(command)
