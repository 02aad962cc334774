"""``headstart pretrain DIR -b BACKBONE -o OUT [--method simclr|byol|dino] [--time-limit 30m]``."""

from __future__ import annotations

from pathlib import Path

import typer

from headstart.cli.options import build_config
from headstart.cli.render import console
from headstart.errors import ConfigError

# the library's defaults (headstart.pretrain.options), repeated here so --help imports nothing
_BLOCKS, _SIZE, _VIEWS, _EPOCHS, _BATCH = 3, 160, 4, 10, 32


def register(app: typer.Typer) -> None:
    app.command("pretrain")(command)


def command(
    data: Path | None = typer.Argument(
        None, help="A folder of images (sub-folders are read; labels, if any, are ignored)."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="The backbone folder to write (then: fit -b OUT)."
    ),
    backbone: str | None = typer.Option(
        None, "--backbone", "-b", help="The backbone to adapt (default: mobilenet_v2)."
    ),
    weights: Path | None = typer.Option(None, "--weights", help="Local weights for -b."),
    method: str = typer.Option("simclr", "--method", "-m", help="simclr, byol or dino."),
    time_limit: str | None = typer.Option(
        None, "--time-limit", help="Stop training after this long, e.g. 30m (default: epochs)."
    ),
    epochs: int = typer.Option(_EPOCHS, "--epochs", help="Passes over the images."),
    train_blocks: int = typer.Option(
        _BLOCKS, "--train-blocks", help="How many of the last blocks train (the rest frozen)."
    ),
    image_size: int = typer.Option(_SIZE, "--image-size", help="View size in pixels."),
    views: int = typer.Option(
        _VIEWS, "--views", help="Augmented views kept per image (even; pairs drawn each epoch)."
    ),
    batch_size: int = typer.Option(_BATCH, "--batch-size", help="Images per step."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config value: --set train.accelerator=cpu"
    ),
    devices: str | None = typer.Option(None, "--devices", help="Training devices (e.g. 2)."),
    strategy: str | None = typer.Option(
        None, "--strategy", help="Distributed strategy over --devices, e.g. ddp."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the killed pretraining in this output folder."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier OUT."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Self-supervised adaptation of a pretrained backbone to your images (lightly's SimCLR,
    BYOL or DINO on its last blocks); writes a backbone folder that fit, finetune,
    rank-backbones and export take as -b OUT."""
    from headstart.pretrain import PretrainOptions, pretrain  # the library: when it runs

    extra = [f"train.devices={devices}"] if devices is not None else []
    extra += [f"train.distributed={strategy}"] if strategy is not None else []
    cfg = build_config(config, set_, backbone=backbone, weights=weights, extra=extra)
    if resume is not None:
        result = pretrain(None, resume, config=cfg, resume=True, progress=not quiet)
    else:
        if data is None or output is None:
            raise ConfigError("pretrain needs DATA and -o OUT, or --resume OUT")
        options = PretrainOptions(
            train_blocks=train_blocks,
            image_size=image_size,
            views=views,
            epochs=epochs,
            batch_size=batch_size,
        )
        result = pretrain(
            data,
            output,
            method=method,
            time_limit=time_limit,
            config=cfg,
            options=options,
            overwrite=overwrite,
            progress=not quiet,
        )
    console.print(
        f"Pretrained {result.base.name} with {result.options.method} on {result.images} "
        f"images: {result.epochs_run} epoch(s), {result.steps} steps, {result.seconds:.0f} s; "
        f"trained {', '.join(result.trained)}",
        highlight=False,
    )
    console.print(f"Backbone folder: {result.output}  (use: headstart fit DATA -b {result.output})")
