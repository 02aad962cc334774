"""``compare``: two bundles on the same labelled images, one task at a time (statistics:
:mod:`headstart.stats.paired`)."""

from __future__ import annotations

from pathlib import Path

from headstart.cache import CacheRoot
from headstart.data import Task
from headstart.data.labelled import sample_inputs
from headstart.data.manifest import indicator
from headstart.errors import ConfigError, DataError
from headstart.evaluation import model_split
from headstart.model import Model, load
from headstart.stats.paired import Comparison, compare_multilabel, compare_predictions

__all__ = ["compare_models", "matching_task"]


def matching_task(a: Model, b: Model, name: str | None) -> tuple[Task, Task]:
    """Task ``name`` (default: A's first) of A and B's task of the same name; they must be of
    one kind with one class set, else a one-line :class:`ConfigError`."""
    ta = a.task(name)
    tb = next((t for t in b.tasks if t.name == ta.name), None)
    if tb is None:
        raise ConfigError(
            f"model B has no task '{ta.name}'; it has {', '.join(t.name for t in b.tasks)}"
        )
    if ta.multi_label != tb.multi_label:
        raise ConfigError(f"task '{ta.name}' is {ta.kind} in A but {tb.kind} in B")
    if set(ta.classes) != set(tb.classes):
        noun = "labels" if ta.multi_label else "classes"
        raise ConfigError(
            f"the models predict different {noun}: A has {', '.join(ta.classes)}; "
            f"B has {', '.join(tb.classes)}"
        )
    return ta, tb


def compare_models(
    model_a: Model | str | Path,
    model_b: Model | str | Path,
    data: str | Path,
    *,
    task: str | None = None,
    split: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool = False,
    cache: CacheRoot | None = None,
) -> Comparison:
    """Compare two bundles (paths, loaded with ``cache``, or loaded :class:`~headstart.Model`)
    on one ``task`` (default: A's first) of labelled ``data``.

    ``split`` picks a split folder (default test, else val; a plain tree or CSV is used whole).
    Images either model cannot read are left out of both.  Both models must have the task, of
    one kind and class set.  A multi-label task is decided by each model's own thresholds.
    """
    a = model_a if isinstance(model_a, Model) else load(model_a, cache=cache)
    b = model_b if isinstance(model_b, Model) else load(model_b, cache=cache)
    ta, tb = matching_task(a, b, task)
    _, split, samples = model_split(a, data, split)
    paths = sample_inputs(samples)
    proba_a, fail_a = a.predict_proba(paths, task=ta.name, progress=progress)
    proba_b, fail_b = b.predict_proba(paths, task=tb.name, progress=progress)
    keep = [i for i in range(len(paths)) if i not in fail_a and i not in fail_b]
    if not keep:
        raise DataError(f"no image in {data} ({split}) could be read by both models")
    order = [tb.classes.index(c) for c in ta.classes]  # B's columns in A's class order
    cells = [samples[i].labels[ta.name] for i in keep]
    pa, pb = proba_a[keep], proba_b[keep][:, order]
    if ta.multi_label:
        cut_a, cut_b = a.thresholds(ta), b.thresholds(tb)
        assert cut_a is not None and cut_b is not None  # every multi-label head has thresholds
        Y = indicator(cells, ta.classes)
        return compare_multilabel(
            Y, pa, pb, cut_a, cut_b[order], ta.classes, n_boot=n_boot, seed=seed, task=ta.name
        )
    pred_a = [ta.classes[int(j)] for j in pa.argmax(axis=1)]
    pred_b = [ta.classes[int(j)] for j in pb.argmax(axis=1)]
    truth = [cell[0] for cell in cells]
    return compare_predictions(
        truth, pred_a, pred_b, ta.classes, n_boot=n_boot, seed=seed, task=ta.name
    )
