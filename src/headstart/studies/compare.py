"""``compare``: two bundles on the same labelled images (statistics: :mod:`headstart.stats.paired`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart.data.labelled import labelled_split
from headstart.errors import ConfigError, DataError
from headstart.model import Model, load
from headstart.stats.paired import Comparison, compare_predictions

__all__ = ["compare_models"]


def compare_models(
    model_a: Any,
    model_b: Any,
    data: str | Path,
    *,
    split: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool = False,
) -> Comparison:
    """Compare two bundles (paths or loaded :class:`~headstart.Model`) on labelled ``data``.

    ``split`` picks a split folder (default test, else val; a plain tree or CSV is used whole).
    Images either model cannot read are left out of both.  Models must share one class set.
    """
    a = model_a if isinstance(model_a, Model) else load(model_a)
    b = model_b if isinstance(model_b, Model) else load(model_b)
    a.require_plain("compare")
    b.require_plain("compare")
    if set(a.classes) != set(b.classes):
        raise ConfigError(
            f"the models predict different classes: A has {', '.join(a.classes)}; "
            f"B has {', '.join(b.classes)}"
        )
    _, split, samples = labelled_split(data, a.classes, split)
    paths = [s.path for s in samples]
    proba_a, fail_a = a.predict_proba(paths, progress=progress)
    proba_b, fail_b = b.predict_proba(paths, progress=progress)
    keep = [i for i in range(len(paths)) if i not in fail_a and i not in fail_b]
    if not keep:
        raise DataError(f"no image in {data} ({split}) could be read by both models")
    pred_a = [a.classes[int(j)] for j in proba_a[keep].argmax(axis=1)]
    pred_b = [b.classes[int(j)] for j in proba_b[keep].argmax(axis=1)]
    truth = [samples[i].label for i in keep]
    return compare_predictions(truth, pred_a, pred_b, a.classes, n_boot=n_boot, seed=seed)
