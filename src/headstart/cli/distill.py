"""``headstart distill TEACHER DATA -o OUT --student BACKBONE [--unlabelled DIR]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from headstart.cli.options import build_config
from headstart.cli.render import console
from headstart.errors import ConfigError

if TYPE_CHECKING:
    from headstart.result import FitResult

# the library's defaults (headstart.finetune.distill), repeated here so --help imports no torch
_STUDENT = "mobilenet_v2"
_TEMPERATURE = 2.0
_ALPHA = 0.7


def register(app: typer.Typer) -> None:
    app.command("distill")(command)


def command(
    teacher: Path | None = typer.Argument(
        None, help="The teacher: any model bundle (or the run folder holding one)."
    ),
    data: Path | None = typer.Argument(
        None, help="Labelled images (class sub-folders or a CSV) of the teacher's classes."
    ),
    output: Path = typer.Option(
        Path("runs/distilled"), "-o", "--output", help="Run folder of the student."
    ),
    student: str = typer.Option(
        _STUDENT, "--student", "-b", help="The student's backbone (one network, not a+b)."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Local weights file for the student's backbone."
    ),
    unlabelled: Path | None = typer.Option(
        None,
        "--unlabelled",
        help="Unlabelled images (a folder, or a CSV with a path column): the student also "
        "learns the teacher's answers on them.",
    ),
    temperature: float = typer.Option(
        _TEMPERATURE, "--temperature", "-T", help="Softmax temperature of the soft targets."
    ),
    alpha: float = typer.Option(
        _ALPHA, "--alpha", help="Weight of the teacher's soft targets; 1 - alpha: hard labels."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config value: --set train.epochs=10"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model in OUT."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip OUT/report.html."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the killed distillation in this run folder."
    ),
    devices: str | None = typer.Option(None, "--devices", help="Training devices (e.g. 2)."),
    precision: str | None = typer.Option(
        None, "--precision", help="Training precision: 32-true, bf16-mixed, 16-mixed."
    ),
) -> None:
    """Train a small student network on a teacher model's soft targets (knowledge
    distillation): the teacher's accuracy at the student's speed."""
    from headstart.cli.fit import report_fit
    from headstart.finetune.distill import distill, resume_distill  # the library: when it runs

    if resume is not None:
        result = resume_distill(resume, progress=not quiet)
    else:
        if teacher is None or data is None:
            raise ConfigError("distill needs TEACHER (a model) and DATA, or --resume RUN")
        extra = [f"train.devices={devices}"] if devices is not None else []
        extra += [f"train.precision={precision}"] if precision is not None else []
        cfg = build_config(config, set_, weights=weights, extra=extra)
        result = distill(
            teacher,
            data,
            cfg,
            output,
            student=student,
            unlabelled=unlabelled,
            temperature=temperature,
            alpha=alpha,
            overwrite=overwrite,
            progress=not quiet,
        )
    if not no_report:
        from headstart.report import build_report

        result.report = build_report(result.run_dir)
    report_fit(result)
    _show_distill(result)


def _show_distill(result: FitResult) -> None:
    path = result.run_dir / "distill.json"
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    images = record["images"]
    probs = record["teacher_probabilities"]
    console.print(
        f"Distilled {record['teacher']} ({record['teacher_backbone']}) into {record['student']}"
        f" at T={record['temperature']:g}, alpha={record['alpha']:g}: "
        f"{images['labelled']} labelled + {images['unlabelled']} unlabelled training images; "
        f"teacher probabilities {probs['computed']} computed, {probs['cached']} from cache",
        highlight=False,
    )
    for split, per_task in record["metrics"].items():
        for task, row in per_task.items():
            console.print(
                f"  {split} [{task}] {row['metric']}: teacher {row['teacher']:.3f}, student "
                f"{row['student']:.3f}, agreement {row['agreement']:.3f}",
                highlight=False,
            )
