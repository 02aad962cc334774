"""``headstart compare-strategies DATA -o OUT``: scratch vs probe vs fine-tune over seeds (text
data: TF-IDF vs probe vs fine-tune)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from headstart.cli.options import LABEL_COLUMN_HELP, TASK_HELP, TEXT_COLUMN_HELP, build_config
from headstart.cli.render import console, display_path
from headstart.errors import ConfigError

if TYPE_CHECKING:
    from headstart.studies.strategy_stats import RunScore, StrategyComparison

STRATEGIES = ("scratch", "probe", "finetune", "tfidf")  # headstart.studies.strategies
TEXT_STRATEGY = "tfidf"


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _show_run(run: RunScore, noun: str = "images") -> None:
    metric = "mAP" if run.metric == "mean_ap" else run.metric
    console.print(
        f"seed {run.seed} {run.backbone} {run.strategy}: {metric} {100 * run.score:.1f}%, "
        f"macro-F1 {100 * run.macro_f1:.1f}% on {run.n_test} test {noun}, {run.seconds:.1f} s"
    )


def _show(result: StrategyComparison) -> None:
    name = result.title
    # a one-column data set's task is "label" (headstart.data.DEFAULT_TASK): no need to say
    task = f", task {result.task}" if result.task != "label" else ""
    table = Table(title=f"Held-out test {name} over seeds{task}", title_justify="left")
    columns = ("backbone", "strategy", f"{name} % [95% CI]", "macro-F1 % [95% CI]", "s/run")
    for column in (*columns, "seeds"):
        table.add_column(column, justify="left" if column in ("backbone", "strategy") else "right")
    for r in result.rows:
        table.add_row(
            r.backbone, r.strategy, r.score.cell(), r.macro_f1.cell(),
            f"{r.seconds:.1f}", str(r.score.n),
        )  # fmt: skip
    console.print(table)
    for seed, text in sorted(result.scored.items()):
        console.print(f"seed {seed}: {text}")
    head, *contrasts = result.verdict
    console.print(f"[bold]{head}[/]")
    for sentence in contrasts:
        console.print(f"[bold]{sentence}[/]")
    out = display_path(result.output)
    console.print(
        f"Done in {result.seconds:.1f} s; wrote {out}/results.csv, comparison.json, table.md"
    )


def command(
    data: Path = typer.Argument(
        ...,
        help="Image folder (class sub-folders) or a CSV; text: a CSV with --text-column, or "
        "class folders of .txt files.",
    ),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the comparison."),
    strategies: str | None = typer.Option(
        None,
        "--strategies",
        help=f"Comma-separated: {', '.join(STRATEGIES)} (default: scratch,probe,finetune for "
        "images; tfidf,probe,finetune for text).",
    ),
    backbones: str | None = typer.Option(
        None,
        "--backbones",
        "-b",
        help="Comma-separated backbone names (default: the config's backbone.name).",
    ),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (0..N-1): split and training."),
    text_column: str | None = typer.Option(None, "--text-column", help=TEXT_COLUMN_HELP),
    label_column: list[str] = typer.Option([], "--label-column", help=LABEL_COLUMN_HELP),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: --set a.b=v"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier comparison."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Scratch vs linear probe vs fine-tune (per backbone) over seeds, scored on held-out test
    images on one task (accuracy, or mAP for a multi-label task): mean ± 95% interval,
    seconds per run, and the verdict the statistics support.  Text data compares TF-IDF (word
    and character n-grams, logistic regression) vs probe vs fine-tune of a text encoder."""
    from headstart.studies.strategies import compare_strategies  # the library: when it runs

    if seeds < 1:
        raise ConfigError(f"--seeds must be 1 or more, got {seeds}")
    cfg = build_config(config, set_, text_column=text_column, label_column=label_column)
    chosen = _names(strategies)
    # a folder of .txt files is text too, but that is known only once scanned
    noun = "texts" if text_column or TEXT_STRATEGY in (chosen or []) else "images"
    result = compare_strategies(
        data, output, config=cfg, task=task, strategies=chosen,
        backbones=_names(backbones), seeds=range(seeds), overwrite=overwrite,
        progress=not quiet, on_run=lambda run: _show_run(run, noun),
    )  # fmt: skip
    _show(result)


def register(app: typer.Typer) -> None:
    app.command("compare-strategies")(command)
