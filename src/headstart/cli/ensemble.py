"""``headstart ensemble RUN_A RUN_B ... -o OUT [--method vote|select|stack]``."""

from __future__ import annotations

from pathlib import Path

import typer

from headstart.cli.render import console


def register(app: typer.Typer) -> None:
    app.command("ensemble")(command)


def command(
    runs: list[Path] = typer.Argument(..., help="Run folders fitted on the same data."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder of the ensemble."),
    method: str = typer.Option(
        "select",
        "--method",
        help="vote (soft voting), select (greedy weighted selection, Caruana et al.) or stack "
        "(a logistic meta-learner); select and stack learn from out-of-fold predictions.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model in OUT."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip OUT/report.html."),
) -> None:
    """Combine fitted runs into one model that predicts, serves and exports like any other."""
    from headstart.cli.fit import report_fit
    from headstart.ensemble.runs import ensemble_runs  # the library: when it runs
    from headstart.report import build_report

    result = ensemble_runs(runs, output, method=method, overwrite=overwrite, progress=not quiet)
    if not no_report:
        result.report = build_report(result.run_dir)
    report_fit(result)
    _show_members(result.ensemble or {})


def _show_members(record: dict[str, object]) -> None:
    members = record.get("members")
    if not isinstance(members, list):
        return
    for member in members:
        for task, entry in member["tasks"].items():
            scores = ", ".join(
                f"{k} {v:.3f}" for k, v in entry.items() if isinstance(v, float) and k != "weight"
            )
            extra = ""
            if "weight" in entry:
                extra += f", weight {entry['weight']:.2f}"
            if "vs_ensemble" in entry:
                extra += f"; ensemble vs it: {entry['vs_ensemble']['verdict']}"
            console.print(f"  {member['name']} [{task}]: {scores}{extra}", highlight=False)
