"""``fit --unlabelled``: the checks, and the unlabelled images embedded for the probe (see
:mod:`headstart.pipeline.fitting` and :func:`headstart.probe.semi_supervised`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import BackboneRef
from headstart.config import FitConfig
from headstart.data import Manifest
from headstart.embedding import embed_unlabelled
from headstart.errors import ConfigError, PathNotFoundError

__all__ = ["check_semi_supervised", "embed_for_probe", "with_unlabelled"]


def with_unlabelled(cfg: FitConfig, unlabelled: str | Path | None, kind: str) -> FitConfig:
    """``cfg`` with ``data.unlabelled`` (the argument, else the config's) made absolute, so
    the run's config.yaml reproduces it; one-line errors for a missing path and a strategy
    other than the probe."""
    source = Path(unlabelled) if unlabelled is not None else cfg.data.unlabelled
    if source is None:
        return cfg
    if kind != "probe":
        raise ConfigError(
            f"--unlabelled works with the probe (--strategy probe), not --strategy {kind}"
        )
    path = source.expanduser()
    if not path.exists():
        raise PathNotFoundError(f"unlabelled images: no such file or folder: '{path}'")
    data = cfg.data.model_copy(update={"unlabelled": path.resolve()})
    return cfg.model_copy(update={"data": data})


def check_semi_supervised(manifest: Manifest, cfg: FitConfig) -> None:
    """Unlabelled images teach multi-class image tasks only: a one-line error otherwise."""
    if cfg.data.unlabelled is None:
        return
    if manifest.modality != "image":
        raise ConfigError(
            f"--unlabelled takes images, but {manifest.source or manifest.root} holds "
            f"{manifest.modality}s: semi-supervised fitting works on image data"
        )
    multi = [t.name for t in manifest.targets if t.multi_label]
    if multi:
        raise ConfigError(
            f"--unlabelled needs multi-class tasks; {', '.join(multi)} is multi-label"
        )


def embed_for_probe(
    source: Path, manifest: Manifest, ref: BackboneRef, cfg: FitConfig, progress: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """The embeddings of the unlabelled images ``source`` (less every image of ``manifest``,
    in any split: held-out images stay unseen) and the run's record of them."""
    known = {s.sha256 for s in manifest.samples}
    found = embed_unlabelled(source, cfg, ref=ref, progress=progress, known=known)
    facts = {
        "source": str(found.source),
        "images": len(found.paths),
        "left_out_labelled": found.known,
        "left_out_unusable": found.unusable,
        "left_out_repeats": found.repeats,
        "method": cfg.head.semi_supervised,
        "precision_target": cfg.head.pseudo_label_precision,
    }
    return found.features, facts
