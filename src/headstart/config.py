"""Typed, validated configuration: defaults < YAML file < ``--set a.b=value`` overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from headstart.errors import ConfigError, PathNotFoundError

__all__ = [
    "BackboneConfig",
    "DataConfig",
    "EvalConfig",
    "ExtractConfig",
    "FitConfig",
    "HeadConfig",
    "load_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Frozen):
    """How images are found and split when the folder has no split folders of its own."""

    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    seed: int = 0
    max_pixels: int = Field(89_478_485, gt=0)
    label_column: str = "label"


class BackboneConfig(_Frozen):
    """Which pretrained network extracts the features, and optionally a local weights file."""

    name: str = "mobilenet_v2"
    weights: Path | None = None


class ExtractConfig(_Frozen):
    """How embeddings are computed and where they are cached."""

    engine: Literal["auto", "onnx", "torch"] = "auto"
    batch_size: int = Field(32, gt=0)
    workers: int | None = Field(None, ge=0)
    cache_dir: Path | None = None


class HeadConfig(_Frozen):
    """The classifier trained on the embeddings."""

    kind: str = "logistic"
    params: dict[str, Any] = Field(default_factory=dict)


class EvalConfig(_Frozen):
    """How the printed numbers are computed."""

    n_boot: int = Field(1000, ge=0)


class FitConfig(_Frozen):
    """Everything ``fit`` needs besides the data path; saved beside every run."""

    data: DataConfig = DataConfig()
    backbone: BackboneConfig = BackboneConfig()
    extract: ExtractConfig = ExtractConfig()
    head: HeadConfig = HeadConfig()
    eval: EvalConfig = EvalConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (e.g. head.kind=knn), got '{item}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        parts.append(f"{where}: {e['msg']}" + (f" (got {e['input']!r})" if "input" in e else ""))
    return "invalid config: " + "; ".join(parts)


def load_config(
    path: Path | None = None,
    overrides: Sequence[str] = (),
    base: dict[str, Any] | None = None,
) -> FitConfig:
    """Build a :class:`FitConfig` from defaults, ``base``, an optional YAML file and overrides."""
    tree: dict[str, Any] = dict(base or {})
    if path is not None:
        if not path.is_file():
            raise PathNotFoundError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping, not {type(loaded).__name__}"
            )
        tree.update(loaded)
    for item in overrides:
        _set_dotted(tree, *_parse_override(item))
    try:
        return FitConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
