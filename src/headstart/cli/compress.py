"""``headstart compress MODEL DATA -o OUT --methods int8,prune:0.3,distill:mobilenet_v2``."""

from __future__ import annotations

from pathlib import Path

import typer

from headstart.cli.render import console


def register(app: typer.Typer) -> None:
    app.command("compress")(command)


def _say(line: str) -> None:
    console.print(line, soft_wrap=True, markup=False, highlight=False)


def command(
    model: Path = typer.Argument(..., help="Model bundle folder (RUN/model) to compress."),
    data: Path = typer.Argument(
        ..., help="Its labelled data with a test split: train/val train, test scores."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Folder of the results."),
    methods: str = typer.Option(
        "int8,prune:0.3,distill:mobilenet_v2",
        "--methods",
        help="Comma-separated: int8 (static, whole network, calibrated on train images), "
        "prune:RATIO (channels cut, then a recovery fine-tune), distill:BACKBONE (a student "
        "fine-tuned on the model's soft targets).",
    ),
    unlabelled: Path | None = typer.Option(
        None, "--unlabelled", help="More images (folder or CSV) for distillation's soft targets."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Config override, e.g. --set train.epochs=3 (the fine-tuning recipe)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results in OUT."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Make smaller or faster versions of a model; measure each (accuracy on DATA's test split,
    images/s and size of its ONNX export) beside the original, mark the Pareto front."""
    from headstart.cli.options import build_config
    from headstart.compress import compress  # the library: when it runs

    result = compress(
        model,
        data,
        output,
        methods=methods,
        config=build_config(config, set_),
        unlabelled=unlabelled,
        overwrite=overwrite,
        progress=not quiet,
        notify=_say,
    )
    base = result.records[0]
    _say(
        f"{'method':<24} {'accuracy':>9} {'images/s':>16} {'ONNX MB':>8} {'backbone MB':>12}"
        "  pareto"
    )
    for r in result.records:
        speed, base_speed = r.images_per_s or 0.0, base.images_per_s or 1.0
        ratio = "" if r is base else f" ({speed / base_speed:.2f}x)"
        backbone = "" if r.backbone_bytes is None else f"{r.backbone_bytes / 1e6:.1f}"
        _say(
            f"{r.method:<24} {100 * r.accuracy:>8.1f}% {f'{speed:.1f}{ratio}':>16} "
            f"{r.size_bytes / 1e6:>8.1f} {backbone:>12}  {'yes' if r.pareto else ''}"
        )
    _say(f"measured on {result.n_images} {result.split} images; {result.machine}")
    _say(f"wrote {result.output / 'compress.json'} and {result.report}")
