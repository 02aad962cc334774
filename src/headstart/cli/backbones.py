"""``headstart backbones``: what is known, and what is usable here right now."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from headstart.cli.render import console

if TYPE_CHECKING:
    from headstart.backbones import BackboneRef
    from headstart.cache import CacheRoot


def command(
    inspect: bool = typer.Option(
        False,
        "--all",
        help="Also read the timm/torchvision models' figures and check their weights exactly "
        "(imports those libraries: seconds).",
    ),
    speed: bool = typer.Option(
        False,
        "--speed",
        help="Measure each usable built-in's images/s on this machine (a few seconds each; "
        "remembered for later listings).",
    ),
) -> None:
    """List backbones: feature size, parameters, ImageNet top-1, speed here, and whether usable
    here.  Join names with + to fuse backbones: -b mobilenet_v2+efficientnet_lite2."""
    from headstart.backbones import (
        is_text_name,
        list_backbones,  # the library: when the command runs
        resolve_backbone,
    )
    from headstart.cache import CacheRoot

    statuses = list_backbones(inspect=inspect)
    cache = CacheRoot.of()
    refs = [  # images/s is an image backbone's figure
        resolve_backbone(s.spec.name)
        for s in statuses
        if s.available and ":" not in s.spec.name and not is_text_name(s.spec.name)
    ]
    if speed:
        from headstart.throughput import measure  # loads torch: only when asked

        rates = {}
        for ref in refs:
            console.print(f"measuring {ref.name} ...", highlight=False)
            rates[ref.name] = measure(ref, cache)
    else:
        rates = _remembered(refs, cache)

    table = Table()
    table.add_column("backbone", no_wrap=True)  # names are what users copy: never cut them
    for name, justify in [
        ("dim", "right"),
        ("params", "right"),
        ("ImageNet top-1", "right"),
        ("img/s here", "right"),
        ("usable here", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for status in statuses:
        spec = status.spec
        rate = rates.get(spec.name)
        table.add_row(
            spec.name,
            str(spec.feature_dim) if spec.feature_dim else "?",
            f"{spec.params / 1e6:.1f}M" if spec.params else "?",
            f"{spec.imagenet_top1:.1f}%" if spec.imagenet_top1 else "?",
            f"{rate:.0f}" if rate else "",
            ("[green]yes[/] " if status.available else "[red]no[/] ") + status.detail,
        )
    console.print(table)
    console.print(
        "Any timm model as timm:NAME, any torchvision model as torchvision:NAME "
        "(weights from their cache, the network, or --weights FILE). Fuse with +, e.g. "
        "-b mobilenet_v2+efficientnet_lite2."
    )
    if not rates:
        console.print("img/s here: run `headstart backbones --speed` to measure on this machine.")


def _remembered(refs: list[BackboneRef], cache: CacheRoot) -> dict[str, float]:
    """Speeds measured earlier, without loading torch unless some were (it names the CPU)."""
    if not (cache.path / "throughput.json").is_file():
        return {}
    from headstart.throughput import remembered  # the library: only when there is a record

    return remembered(refs, cache)


def register(app: typer.Typer) -> None:
    app.command("backbones")(command)
