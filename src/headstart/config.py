"""Typed, validated configuration: defaults < YAML file < ``--set a.b=value`` overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from headstart.errors import ConfigError, PathNotFoundError

__all__ = [
    "AugmentConfig",
    "BackboneConfig",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "ExtractConfig",
    "FitConfig",
    "HeadConfig",
    "StrategyConfig",
    "TrainConfig",
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
    label_column: str | list[str] = "label"
    """The CSV label column; several make a multi-task data set (one task per column)."""
    text_column: str | None = None
    """Text data: the CSV column holding each sample's text (no ``path`` column needed).
    Folders of ``.txt`` files per class are text data without it."""
    dedupe: bool = False
    """Remove the later member of each cross-split (near-)duplicate pair before fitting."""
    drop_label_issues: bool = False
    """Leave out the training images whose label confident learning calls wrong (the ones
    ``headstart explore`` flags); they are listed in problems.csv with the suggested label."""
    near_duplicate_threshold: float = Field(0.86, gt=0.0, le=1.0)
    unlabelled: Path | None = None
    """Unlabelled images for a semi-supervised probe (``fit --unlabelled``): a folder, or a CSV
    with a ``path`` column (relative to the CSV); embedded once through the cache."""


class BackboneConfig(_Frozen):
    """Which pretrained network extracts the features, and optionally a local weights file."""

    name: str = "mobilenet_v2"
    weights: Path | None = None
    pretrained: bool = True
    """False: fine-tuning starts the same architecture from its library's seeded random
    initialisation (training from scratch, the baseline transfer learning is measured against);
    embeddings, and so the probe, need pretrained weights."""


class ExtractConfig(_Frozen):
    """How embeddings are computed and where they are cached."""

    engine: Literal["auto", "onnx", "torch"] = "auto"
    precision: Literal["fp32", "int8"] = "fp32"
    """``int8``: embed with a static int8 model of the backbone (ONNX Runtime), calibrated on
    the data's training images; the bundle carries it (see headstart.features.int8)."""
    batch_size: int = Field(32, gt=0)
    workers: int | None = Field(None, ge=0)
    cache_dir: Path | None = None
    executor: Literal["local", "ray"] = "local"
    """Where images are decoded and embedded (``--engine``): ``local`` (this process) or
    ``ray`` (a Ray Data job on a cluster, ``pip install 'headstart[ray]'``; ``workers`` is then
    its number of ONNX Runtime actors).  Either writes the same cache."""
    address: str | None = None
    """``executor=ray``: the cluster (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``); None
    joins the one Ray finds (``RAY_ADDRESS``, the latest ``ray start``) or starts a local one."""


class HeadConfig(_Frozen):
    """The classifier trained on the embeddings."""

    kind: str = "logistic"
    params: dict[str, Any] = Field(default_factory=dict)
    semi_supervised: Literal["auto", "self_training", "label_spreading", "none"] = "auto"
    """With ``data.unlabelled``: how pseudo-labels are made (``auto``: the best of the three
    by cross-validation on the labelled training images; see headstart.heads.semi)."""
    pseudo_label_precision: float = Field(0.95, gt=0.0, lt=1.0)
    """The precision pseudo-labels must reach on out-of-fold labelled images: the confidence
    threshold is the lowest that reaches it there."""


class EvalConfig(_Frozen):
    """How the printed numbers are computed."""

    n_boot: int = Field(1000, ge=0)


class StrategyConfig(_Frozen):
    """How the classifier is trained: a head on frozen embeddings, fine-tuning, or either.

    ``auto`` fits the probe first and fine-tunes unless the probe's validation accuracy already
    reaches ``auto_skip_above`` (little left to gain); the better on validation is kept.
    """

    kind: Literal["probe", "finetune", "auto", "tfidf"] = "probe"
    auto_skip_above: float = Field(0.98, ge=0.0, le=1.0)


class TrainConfig(_Frozen):
    """Fine-tuning (Lightning): recipe, optimiser, schedule, regularisation, hardware."""

    epochs: int = Field(5, ge=1)
    frozen_epochs: int = Field(1, ge=0)
    unfreeze_last: int | None = Field(None, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    backbone_lr_ratio: float = Field(0.1, gt=0.0)
    layer_decay: float = Field(0.85, gt=0.0, le=1.0)
    weight_decay: float = Field(0.05, ge=0.0)
    l1: float = Field(0.0, ge=0.0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    ema: bool = False
    ema_decay: float = Field(0.998, gt=0.0, lt=1.0)
    grad_clip: float | None = Field(1.0, gt=0.0)
    accumulate: int = Field(1, ge=1)
    schedule: Literal["cosine", "onecycle", "step", "plateau"] = "cosine"
    warmup_epochs: float = Field(0.5, ge=0.0)
    step_epochs: int = Field(3, ge=1)
    patience: int = Field(3, ge=1)
    imbalance: Literal["auto", "none", "weighted_loss", "sampler"] = "auto"
    imbalance_threshold: float = Field(3.0, ge=1.0)
    precision: str | None = None
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    distributed: str = "auto"
    workers: int = Field(0, ge=0)
    cache_images_mb: int = Field(2048, ge=0)
    max_length: int | None = Field(None, ge=8)
    """Text fine-tuning: tokens kept per text (default: the encoder's own, e.g. 256)."""
    seed: int | None = None
    task_weights: dict[str, float] = Field(default_factory=dict)
    """Multi-task data: each task's weight in the summed loss (default 1)."""


class AugmentConfig(_Frozen):
    """Training-time augmentation: a preset, each of whose transforms can be overridden
    (``None`` keeps the preset's value)."""

    preset: Literal["none", "light", "strong"] = "light"
    crop_scale: tuple[float, float] | None = None
    hflip: bool | None = None
    policy: Literal["none", "trivialaugment", "randaugment"] | None = None
    mixup_alpha: float | None = Field(None, ge=0.0)
    cutmix_alpha: float | None = Field(None, ge=0.0)


class DistillConfig(_Frozen):
    """Knowledge distillation (``headstart distill``): the teacher bundle, the unlabelled
    images and the loss mix.  Written to the run's config.yaml, so ``--resume`` finds them.

    Defaults: ``temperature`` 2, the low end of Hinton et al.'s 2-4, because the teacher's
    probabilities are already calibrated (temperature-scaled on val, so not over-confident)
    and these tasks have few classes, where a higher temperature flattens them towards
    uniform; ``alpha`` 0.7, most of the weight on the teacher (the point of distilling is
    that it knows more than the student learns from labels alone), the rest on the hard
    labels, which correct the teacher's own mistakes on the training images."""

    teacher: Path | None = None
    unlabelled: Path | None = None
    temperature: float = Field(2.0, gt=0.0)
    alpha: float = Field(0.7, ge=0.0, le=1.0)
    """The soft (teacher) term's weight; ``1 - alpha`` goes to the hard labels."""


class FitConfig(_Frozen):
    """Everything ``fit`` needs besides the data path; saved beside every run."""

    data: DataConfig = DataConfig()
    backbone: BackboneConfig = BackboneConfig()
    extract: ExtractConfig = ExtractConfig()
    head: HeadConfig = HeadConfig()
    eval: EvalConfig = EvalConfig()
    strategy: StrategyConfig = StrategyConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    distill: DistillConfig = DistillConfig()

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
