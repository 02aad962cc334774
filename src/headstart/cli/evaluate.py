"""``headstart evaluate MODEL DATA``: metrics of every task with 95% bootstrap intervals, and
with ``--ood-data DIR`` how well the model's OOD score tells DATA's images from DIR's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from headstart.cli.options import TTA_HELP, load_model
from headstart.cli.render import console, display_path, err_console, show_manifest, show_metrics

if TYPE_CHECKING:
    from headstart.stats import OodMetrics


def show_ood(metrics: OodMetrics, inside: str, foreign: Path) -> None:
    """AUROC and FPR at 95% TPR with their intervals, and what the model's threshold does."""
    table = Table(title=f"Out-of-distribution: {inside} against {foreign}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")
    for name, value in (("AUROC", metrics.auroc), ("FPR at 95% TPR", metrics.fpr_at_95_tpr)):
        table.add_row(
            name, f"{100 * value.value:.1f}%", f"{100 * value.low:.1f}-{100 * value.high:.1f}"
        )
    if metrics.threshold is not None and metrics.in_passed is not None:
        table.add_row(
            f"in-distribution passing the threshold {metrics.threshold:.4f}",
            f"{100 * metrics.in_passed:.1f}%",
            "",
        )
    if metrics.out_flagged is not None:
        table.add_row("foreign images flagged", f"{100 * metrics.out_flagged:.1f}%", "")
    table.caption = f"{metrics.n_in} in-distribution and {metrics.n_out} foreign images"
    console.print(table)


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
    ood_data: Path | None = typer.Option(
        None,
        "--ood-data",
        help="A folder of images unlike the training data: report how well the model's OOD "
        "score tells DATA's evaluated images from these (AUROC, FPR at 95% TPR).",
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config value (extract.cache_dir)."
    ),
) -> None:
    """Evaluate a model on labelled images: per task accuracy and macro-F1 (mAP for a
    multi-label task), per class, confusion matrix; with --ood-data, out-of-distribution
    detection."""
    from headstart.evaluation import evaluate_data  # the library: when the command runs
    from headstart.fsutil import atomic_write_text

    result = evaluate_data(
        load_model(model, config, set_),
        data,
        split=split,
        progress=not quiet,
        tta=tta,
        ood_data=ood_data,
    )
    show_manifest(result.manifest)
    show_metrics(result.metrics, f"{result.split} ({data})")
    if result.ood is not None and ood_data is not None:
        for path, why in (result.ood_failures or {}).items():
            err_console.print(f"[yellow]skipped[/] {display_path(path)}: {why}")
        show_ood(result.ood, f"{result.split} ({data})", ood_data)
    if output is not None:
        record = {"tasks": {t: m.to_dict() for t, m in result.metrics.items()}}
        if result.ood is not None:
            record["ood"] = result.ood.to_dict()
        atomic_write_text(output, json.dumps(record, indent=2) + "\n")
        console.print(f"Metrics written to {output}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(command)
