"""``headstart fit DATA -o RUN``."""

from __future__ import annotations

from pathlib import Path

import typer

from headstart.cli.render import console, show_fit, show_manifest, show_metrics
from headstart.config import load_config
from headstart.pipeline import FitResult, fit


def report_fit(result: FitResult) -> None:
    """Everything ``fit`` prints after the work: data, extraction, metrics, where files went."""
    show_manifest(result.manifest)
    ex = result.extraction
    rate = ex.n_computed / ex.seconds if ex.seconds > 0 and ex.n_computed else 0.0
    console.print(
        f"Backbone {result.config.backbone.name}: {ex.n_computed} images embedded"
        + (f" ({rate:.0f} img/s, {ex.engine})" if ex.n_computed else "")
        + f", {ex.n_cached} from cache"
    )
    console.print(
        f"Head: {result.config.head.kind}, trained on {len(result.manifest.split('train'))} images"
    )
    last = list(result.metrics)[-1] if result.metrics else None
    for split, metrics in result.metrics.items():
        show_metrics(metrics, f"{split} split", detail=split == last)
    show_fit(result.timings, result.bundle_dir, result.run_dir)


def command(
    data: Path = typer.Argument(
        ..., help="Image folder (class sub-folders) or a CSV (path,label)."
    ),
    output: Path = typer.Option(Path("runs/latest"), "-o", "--output", help="Run folder to write."),
    backbone: str | None = typer.Option(
        None, "-b", "--backbone", help="Backbone name (see `headstart backbones`)."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Local weights file for the backbone."
    ),
    head: str | None = typer.Option(None, "--head", help="Head: logistic (default), knn, mlp."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config value: --set head.kind=knn"
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a model already in the run folder."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fit a classifier: pretrained backbone → cached embeddings → head → evaluated bundle."""
    overrides = list(set_)
    if backbone:
        overrides.append(f"backbone.name={backbone}")
    if weights:
        overrides.append(f"backbone.weights={weights}")
    if head:
        overrides.append(f"head.kind={head}")
    cfg = load_config(config, overrides)
    result = fit(data, output, config=cfg, overwrite=overwrite, progress=not quiet)
    report_fit(result)


def register(app: typer.Typer) -> None:
    app.command("fit")(command)
