"""``headstart rank-backbones DATA``: transferability scores per backbone, probe check, choice."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from headstart.cli.options import LABEL_COLUMN_HELP, TASK_HELP, TEXT_COLUMN_HELP, build_config
from headstart.cli.render import console

if TYPE_CHECKING:
    from headstart.ranking import Ranking

SCORES = ("logme", "leep", "nce", "h_score", "knn")  # headstart.ranking.SCORES, import-free

_TITLES = {"logme": "LogME", "leep": "LEEP", "nce": "NCE", "h_score": "H-score", "knn": "kNN acc"}


def _cell(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def show_ranking(ranking: Ranking) -> None:
    """The score table (best first), the probe check and the chosen backbone."""
    table = Table(title="Backbone ranking (higher is better)", title_justify="left")
    table.add_column("backbone")
    for name in SCORES:
        marker = "*" if name in ranking.ranking_scores else ""
        table.add_column(_TITLES[name] + marker, justify="right")
    table.add_column("mean rank*", justify="right")
    table.add_column("probe acc" if ranking.metric == "accuracy" else "probe mAP", justify="right")
    table.add_column("score s", justify="right")
    for row in ranking.rows:
        probe = (
            f"{_percent(row.probe_score)} {row.probe_on}"
            if row.probe_score is not None and row.probe_seconds is not None
            else "-"
        )
        cells = [_cell(row.scores[n]) for n in SCORES]
        score_s = f"{sum(row.seconds.values()):.2f}"
        table.add_row(row.backbone, *cells, f"{row.combined_rank:.1f}", probe, score_s)
    console.print(table)
    _show_seconds(ranking)
    used = " + ".join(_TITLES[n] for n in ranking.ranking_scores)
    what = (
        "" if ranking.metric == "accuracy" else " (a multi-label task: scores averaged over labels)"
    )
    console.print(f"* ranked by the mean rank of {used}{what}; the probe of the top ones decides.")
    for name, why in ranking.skipped.items():
        console.print(f"Skipped {name}: {why}")
    task = f" for task {ranking.task!r}" if ranking.task and ranking.task != "label" else ""
    console.print(
        f"Chosen backbone{task}: [bold]{ranking.chosen}[/] ({ranking.seconds:.1f} s in all)"
    )


def _show_seconds(ranking: Ranking) -> None:
    table = Table(title="Seconds", title_justify="left")
    table.add_column("backbone")
    for name in (*SCORES, "embed", "probe"):
        table.add_column(_TITLES.get(name, name), justify="right")
    for row in ranking.rows:
        probe = "-" if row.probe_seconds is None else f"{row.probe_seconds:.2f}"
        cells = [f"{row.seconds[n]:.2f}" for n in SCORES]
        table.add_row(row.backbone, *cells, f"{row.embed_seconds:.1f}", probe)
    console.print(table)


def command(
    data: Path = typer.Argument(
        ..., help="Image folder (class sub-folders) or a CSV (path,label)."
    ),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    top: int = typer.Option(2, "--top", help="How many of the best-scored backbones to probe."),
    backbone: list[str] = typer.Option(
        [], "-b", "--backbone", help="Rank only these (repeat); default: all usable here."
    ),
    text_column: str | None = typer.Option(None, "--text-column", help=TEXT_COLUMN_HELP),
    label_column: list[str] = typer.Option([], "--label-column", help=LABEL_COLUMN_HELP),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Rank backbones by LogME, LEEP, NCE, H-score and kNN accuracy for one task, check the
    best with a probe (accuracy, or mAP for a multi-label task)."""
    from headstart.ranking import rank_backbones  # the library: when it runs

    cfg = build_config(config, set_, text_column=text_column, label_column=label_column)
    ranking = rank_backbones(
        data, cfg, task=task, backbones=backbone or None, top=top, progress=not quiet
    )
    show_ranking(ranking)


def register(app: typer.Typer) -> None:
    """Add ``rank-backbones`` to the app."""
    app.command("rank-backbones")(command)
