"""``headstart cv DATA``: k-fold cross-validation of a head on cached embeddings, one task."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from headstart.cli.options import LABEL_COLUMN_HELP, TASK_HELP, TEXT_COLUMN_HELP, build_config
from headstart.cli.render import console, display_path, show_manifest

#: Score keys as they read (``headstart.studies.scoring.METRIC_TITLES``, import-free).
_TITLES = {"accuracy": "accuracy", "mean_ap": "mAP", "macro_f1": "macro-F1"}


def command(
    data: Path = typer.Argument(..., help="Image folder (class sub-folders) or a CSV."),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    backbone: str | None = typer.Option(None, "-b", "--backbone", help="Backbone name."),
    folds: int = typer.Option(5, "--folds", "-k", help="Number of folds."),
    repeats: int = typer.Option(1, "--repeats", help="Repeat k-fold with reshuffled folds."),
    group_column: str | None = typer.Option(
        None,
        "--group-column",
        help="Keep groups together (group k-fold): a column of the CSV, or 'folder' "
        "(each image's parent folder).",
    ),
    head: str | None = typer.Option(
        None, "--head", help="Head: logistic (default), knn, mlp, hgb, lightgbm, bagging."
    ),
    text_column: str | None = typer.Option(None, "--text-column", help=TEXT_COLUMN_HELP),
    label_column: list[str] = typer.Option([], "--label-column", help=LABEL_COLUMN_HELP),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: --set a.b=v"),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold shuffling."),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Folder for cv.json and oof_predictions.csv (default runs/cv-<data name>).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Cross-validate a head on train+val (test kept aside): mean, std, 95% t-interval of
    accuracy and macro-F1 (a multi-label task: mAP and macro-F1 at threshold 0.5)."""
    from headstart.studies.cv import cross_validate, write_cv  # the library: when it runs

    cfg = build_config(
        config,
        set_,
        text_column=text_column,
        label_column=label_column,
        backbone=backbone,
        head=head,
    )
    result = cross_validate(
        data, cfg, task=task, folds=folds, repeats=repeats, group_column=group_column,
        seed=seed, progress=not quiet,
    )  # fmt: skip
    out = write_cv(result, output or Path("runs") / f"cv-{Path(data).resolve().stem}")
    show_manifest(result.manifest)
    t = result.task
    if len(result.manifest.targets) > 1 or t.multi_label:
        scores = "mAP and macro-F1 at threshold 0.5" if t.multi_label else "accuracy and macro-F1"
        console.print(f"Task {t.describe()}: {scores}")
    table = Table(title=f"{result.scheme}, {len(result.samples)} images", title_justify="left")
    for column in ("repeat", "fold", "train", "test", *(_TITLES[m] for m in result.metrics)):
        table.add_column(column, justify="right")
    for f in result.folds:
        table.add_row(
            str(f.repeat), str(f.fold), str(f.n_train), str(f.n_test),
            *(f"{100 * f.scores[m]:.1f}" for m in result.metrics),
        )  # fmt: skip
    console.print(table)
    for name, s in result.summary.items():
        console.print(
            f"{'mAP' if name == 'mean_ap' else name}: {100 * s.mean:.1f}% ± {100 * s.std:.1f} "
            f"(std), 95% t-interval {100 * s.low:.1f}-{100 * s.high:.1f}"
        )
    held = len(result.manifest.samples) - len(result.samples)
    if held:
        console.print(f"{held} test images kept aside (not used by CV).")
    console.print(
        f"Done in {result.seconds:.1f} s; wrote {display_path(out)}/cv.json, oof_predictions.csv"
    )


def register(app: typer.Typer) -> None:
    app.command("cv")(command)
