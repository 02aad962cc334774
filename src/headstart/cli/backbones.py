"""``headstart backbones``: what is known, and what is usable here right now."""

from __future__ import annotations

import typer
from rich.table import Table

from headstart.cli.render import console


def command(
    inspect: bool = typer.Option(
        False,
        "--all",
        help="Also read the timm/torchvision models' figures and check their weights exactly "
        "(imports those libraries: seconds).",
    ),
) -> None:
    """List backbones: feature size, parameters, ImageNet top-1, and whether usable here."""
    from headstart.backbones import list_backbones  # the library: when the command runs

    table = Table()
    for name, justify in [
        ("backbone", "left"),
        ("dim", "right"),
        ("params", "right"),
        ("ImageNet top-1", "right"),
        ("usable here", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for status in list_backbones(inspect=inspect):
        spec = status.spec
        table.add_row(
            spec.name,
            str(spec.feature_dim) if spec.feature_dim else "?",
            f"{spec.params / 1e6:.1f}M" if spec.params else "?",
            f"{spec.imagenet_top1:.1f}%" if spec.imagenet_top1 else "?",
            ("[green]yes[/] " if status.available else "[red]no[/] ") + status.detail,
        )
    console.print(table)
    console.print(
        "Any timm model as timm:NAME, any torchvision model as torchvision:NAME "
        "(weights from their cache, the network, or --weights FILE)."
    )


def register(app: typer.Typer) -> None:
    app.command("backbones")(command)
