"""``headstart lr-find DATA -o RUN``: suggested learning rate with its plot."""

from __future__ import annotations

from pathlib import Path

import typer

from headstart.cli.options import build_config
from headstart.cli.render import console


def command(
    data: Path = typer.Argument(..., help="Image folder (class sub-folders) or a CSV."),
    output: Path = typer.Option(
        Path("runs/lr_find"), "-o", "--output", help="Folder for lr_find.png and lr_find.json."
    ),
    backbone: str | None = typer.Option(None, "-b", "--backbone", help="Backbone name."),
    weights: Path | None = typer.Option(None, "--weights", help="Local weights file."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value."),
    steps: int = typer.Option(100, "--steps", min=2, help="Learning rates to try."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Learning-rate range test (Lightning's tuner): prints the suggested train.lr."""
    from headstart.finetune.lr_find import lr_find

    cfg = build_config(config, set_, backbone=backbone, weights=weights)
    result = lr_find(data, cfg, output, steps=steps, progress=not quiet)
    if result.suggestion is None:
        console.print("No suggestion: the loss curve has no clear descent (see the plot).")
    else:
        console.print(f"Suggested learning rate: {result.suggestion:.2e}  (--set train.lr=...)")
    console.print(f"Plot: {result.plot}")


def register(app: typer.Typer) -> None:
    app.command("lr-find")(command)
