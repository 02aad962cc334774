"""Options shared by several subcommands, turned into one validated config.

Command modules import only typer and this package at module level: ``headstart --help`` and
``headstart COMMAND --help`` must start at once, so each command imports the library (numpy,
scikit-learn, torch) in its body, when it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headstart.config import FitConfig
    from headstart.model import Model

__all__ = ["TASK_HELP", "TTA_HELP", "build_config", "load_model"]

TTA_HELP = (
    "Test-time augmentation: none, flip (centre crop + mirror), crops (4 corners + centre) or "
    "flip+crops (10 views); the mean of per-view probabilities."
)
TASK_HELP = "The task (label column) to use, for data or models with several (default: the first)."


TEXT_COLUMN_HELP = "Text data: the CSV column holding each text (folders of .txt need none)."
LABEL_COLUMN_HELP = "The CSV label column (default: label); repeat it for several tasks."


def build_config(
    config: Path | None,
    set_: Sequence[str],
    *,
    backbone: str | None = None,
    weights: Path | None = None,
    head: str | None = None,
    text_column: str | None = None,
    label_column: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> FitConfig:
    """Defaults < ``--config`` file < ``--set`` items < the named flags (``-b``, ``--weights``,
    ``--head``, ``--text-column``, ``--label-column``, repeated for several tasks) < ``extra``
    overrides."""
    from headstart.config import load_config  # pydantic: loaded when a command runs

    named = {
        "backbone.name": backbone,
        "backbone.weights": weights,
        "head.kind": head,
        "data.text_column": text_column,
        "data.label_column": (
            label_column[0] if len(label_column) == 1 else f"[{','.join(label_column)}]"
        )
        if label_column
        else None,
    }
    overrides = [*set_, *(f"{key}={value}" for key, value in named.items() if value), *extra]
    return load_config(config, overrides)


def load_model(path: Path, config: Path | None = None, set_: Sequence[str] = ()) -> Model:
    """The bundle at ``path``, its embeddings cached under the root the config names
    (``--set extract.cache_dir=...``), else the default root."""
    from headstart.cache import CacheRoot
    from headstart.model import load

    return load(path, cache=CacheRoot.for_config(build_config(config, set_)))
