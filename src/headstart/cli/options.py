"""Options shared by several subcommands, turned into one validated config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from headstart.config import FitConfig, load_config

__all__ = ["TTA_HELP", "build_config"]

TTA_HELP = (
    "Test-time augmentation: none, flip (centre crop + mirror), crops (4 corners + centre) or "
    "flip+crops (10 views); the mean of per-view probabilities."
)


def build_config(
    config: Path | None,
    set_: Sequence[str],
    *,
    backbone: str | None = None,
    weights: Path | None = None,
    head: str | None = None,
    extra: Sequence[str] = (),
) -> FitConfig:
    """Defaults < ``--config`` file < ``--set`` items < the named flags (``-b``, ``--weights``,
    ``--head``) < ``extra`` overrides."""
    named = {"backbone.name": backbone, "backbone.weights": weights, "head.kind": head}
    overrides = [*set_, *(f"{key}={value}" for key, value in named.items() if value), *extra]
    return load_config(config, overrides)
