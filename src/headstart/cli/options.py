"""Options shared by several subcommands, turned into one validated config.

Command modules import only typer and this package at module level: ``headstart --help`` and
``headstart COMMAND --help`` must start at once, so each command imports the library (numpy,
scikit-learn, torch) in its body, when it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from headstart.errors import ConfigError

if TYPE_CHECKING:
    from headstart.config import FitConfig
    from headstart.model import Model

__all__ = ["ADDRESS_HELP", "ENGINE_HELP", "TASK_HELP", "TTA_HELP", "build_config", "load_model"]

TTA_HELP = (
    "Test-time augmentation: none, flip (centre crop + mirror), crops (4 corners + centre) or "
    "flip+crops (10 views); the mean of per-view probabilities."
)
TASK_HELP = "The task (label column) to use, for data or models with several (default: the first)."


TEXT_COLUMN_HELP = "Text data: the CSV column holding each text (folders of .txt need none)."
LABEL_COLUMN_HELP = "The CSV label column (default: label); repeat it for several tasks."
ENGINE_HELP = (
    "Where images are read, decoded and embedded: local (this process, the default) or ray "
    "(a Ray Data job on a cluster; pip install 'headstart\\[ray]'). Both fill the same cache."
)
ADDRESS_HELP = (
    "--engine ray: the cluster, auto (a running one), HOST:PORT (its head) or ray://HOST:PORT "
    "(Ray Client); default: RAY_ADDRESS, the latest `ray start` here, else a local one."
)
EXECUTORS = ("local", "ray")  # headstart.features.ray_engine.EXECUTORS, import-free


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
    engine: str | None = None,
    address: str | None = None,
) -> FitConfig:
    """Defaults < ``--config`` file < ``--set`` items < the named flags (``-b``, ``--weights``,
    ``--head``, ``--text-column``, ``--label-column``, repeated for several tasks) < ``extra``
    overrides < ``--engine`` / ``--address`` (``extract.executor`` / ``extract.address``,
    taken as given: an address is no YAML)."""
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
    cfg = load_config(config, overrides)
    if engine is None and address is None:
        return cfg
    return _with_executor(cfg, engine, address)


def _with_executor(cfg: FitConfig, engine: str | None, address: str | None) -> FitConfig:
    """``cfg`` with ``--engine`` and ``--address``; with ray, checked before any work is done
    (Ray installed, the address well formed)."""
    if engine is not None and engine not in EXECUTORS:
        raise ConfigError(f"unknown --engine '{engine}'; valid: {', '.join(EXECUTORS)}")
    executor = engine or cfg.extract.executor
    update = {"executor": executor, **({"address": address} if address is not None else {})}
    if executor == "ray":
        from headstart.features.ray_engine import require_ray  # checks only; no Ray import

        require_ray(address)
    elif address is not None:
        raise ConfigError("--address names a Ray cluster: add --engine ray")
    return cfg.model_copy(update={"extract": cfg.extract.model_copy(update=update)})


def load_model(path: Path, config: Path | None = None, set_: Sequence[str] = ()) -> Model:
    """The bundle at ``path``, its embeddings cached under the root the config names
    (``--set extract.cache_dir=...``), else the default root."""
    from headstart.cache import CacheRoot
    from headstart.model import load

    return load(path, cache=CacheRoot.for_config(build_config(config, set_)))
