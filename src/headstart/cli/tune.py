"""``headstart tune DATA``: Optuna search over heads and their hyperparameters."""

from __future__ import annotations

from pathlib import Path

import typer

from headstart.cli.fit import report_fit
from headstart.cli.options import LABEL_COLUMN_HELP, TASK_HELP, TEXT_COLUMN_HELP, build_config
from headstart.cli.render import console


def command(
    data: Path = typer.Argument(..., help="Image folder (class sub-folders) or a CSV."),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    trials: int = typer.Option(
        100, "--trials", "-n", help="Finished trials the study should hold."
    ),
    output: Path = typer.Option(Path("runs/tune"), "-o", "--output", help="Run folder to write."),
    backbone: str | None = typer.Option(None, "-b", "--backbone", help="Backbone name."),
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="Optuna RDB URL (default sqlite:///RUN/study.db), e.g. postgresql://...",
    ),
    study_name: str | None = typer.Option(
        None, "--study-name", help="Study name (default headstart-<data hash>-<backbone>)."
    ),
    n_jobs: int = typer.Option(1, "--n-jobs", "-j", help="Worker processes on this machine."),
    folds: int = typer.Option(3, "--folds", "-k", help="CV folds per trial."),
    seed: int = typer.Option(0, "--seed", help="Sampler seed."),
    text_column: str | None = typer.Option(None, "--text-column", help=TEXT_COLUMN_HELP),
    label_column: list[str] = typer.Option([], "--label-column", help=LABEL_COLUMN_HELP),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: --set a.b=v"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    no_report: bool = typer.Option(
        False, "--no-report", help="Skip the refit's HTML report (RUN/report.html)."
    ),
) -> None:
    """Tune the head by CV accuracy (mAP for a multi-label task) of one task on the train
    split; refit the best as a normal run (every task's head gets the chosen settings)."""
    from headstart.studies.tune import tune  # the library: when it runs

    cfg = build_config(
        config, set_, text_column=text_column, label_column=label_column, backbone=backbone
    )
    result = tune(
        data, output, cfg, task=task, trials=trials, storage=storage, study_name=study_name,
        n_jobs=n_jobs, folds=folds, seed=seed, progress=not quiet, report=not no_report,
    )  # fmt: skip
    report_fit(result.fit)
    console.print(
        f"Study {result.study_name!r} ({result.storage}): {result.n_finished} finished trials"
        + (f", tuned for task {result.task!r}" if len(result.fit.tasks) > 1 else "")
    )
    console.print(f"Best params: {result.best_params}")
    console.print(result.verdict)
    console.print(
        f"Tuning took {result.seconds:.1f} s in all; the trials of this run "
        f"{result.search_seconds:.1f} s."
    )


def register(app: typer.Typer) -> None:
    app.command("tune")(command)
