"""``headstart report RUN [-o FILE]``: the run's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    run: Path = typer.Argument(..., help="Run folder written by `headstart fit -o RUN`."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="HTML file to write (default: RUN/report.html)."
    ),
    errors: int = typer.Option(
        6, "--errors", help="How many of the worst errors to show with Grad-CAM (0: none)."
    ),
    embedding_map: str = typer.Option(
        "pca", "--map", help="Embedding map: pca (instant) or tsne (slower, keeps neighbours)."
    ),
) -> None:
    """Write one self-contained HTML page about a run: data, metrics, errors, model card."""
    from headstart.report import build_report  # the library: when the command runs

    path = build_report(run, output=output, explain_errors=errors, embedding_map=embedding_map)
    print(path)


def register(app: typer.Typer) -> None:
    app.command("report")(command)
