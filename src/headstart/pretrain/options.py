"""The options of a pretraining run (plain values: they are recorded for ``--resume``)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from headstart.errors import ConfigError

__all__ = ["INSTALL_HINT", "METHODS", "PretrainOptions", "require_lightly"]

#: The self-supervised objectives, each from lightly: its loss, heads and view recipes.
METHODS = ("simclr", "byol", "dino")

INSTALL_HINT = "headstart pretrain needs lightly: pip install 'headstart[ssl]'"


def require_lightly() -> None:
    """A one-line ``ConfigError`` saying how to install lightly when it is missing."""
    if importlib.util.find_spec("lightly") is None:
        raise ConfigError(INSTALL_HINT)


@dataclass(frozen=True)
class PretrainOptions:
    """How to pretrain: the objective, how much of the network trains, the views and the
    budget (``time_limit_s``: None for epochs only)."""

    method: str = "simclr"
    train_blocks: int = 3
    image_size: int = 160
    views: int = 4
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    time_limit_s: float | None = None
    cache_mb: int = 2048
