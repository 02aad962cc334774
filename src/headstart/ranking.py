"""Rank backbones for a data set: transferability scores on cached embeddings, then a linear
probe of the best candidates as the check.

Which score to trust.  The literature disagrees (LogME, SFDA and the ECCV 2022 stability study
each find a different winner), so :func:`rank_backbones` computes all five and orders the
candidates by the mean rank of :data:`RANKING_SCORES` -- LEEP, NCE and kNN accuracy.  Measured
on the project's three shared data sets with the two offline backbones
(``benchmarks/rank_backbones.py``): LEEP and NCE picked the probe's winner on 2 of 3, kNN on 1
of 3 (but had the best Kendall tau, 0.47, across the 6 data set x backbone pairs), LogME on none
(tau -0.60).  That evidence is thin -- 3 two-way choices whose probe accuracies differ by 0.6-2.5
points -- so the probe fit of the top candidates, not a score, makes the final choice.

LEEP and NCE need the source model's ImageNet softmax.  Both backbones' ImageNet heads are a
single linear layer on the pooled features the embedding cache already holds, so the logits are
computed from the cached embeddings (``features @ W.T + b``) instead of a second pass over the
images; :func:`imagenet_head` reads ``W`` and ``b`` from the backbone.

Text data ranks the text encoders installed here (``minilm-l6``, ``mpnet-base``): they have no
ImageNet head, so kNN accuracy orders them and the probe check chooses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from headstart.backbones import BackboneRef, list_backbones, require_single, resolve_backbone
from headstart.config import FitConfig, load_config
from headstart.data import Manifest, Task
from headstart.embedding import EmbeddedData, check_pretrained, embed_data, scan_data
from headstart.errors import BackboneError, ConfigError
from headstart.heads import task_head, task_proba, task_target, thresholds_of
from headstart.stats import headline, task_metrics
from headstart.stats import transferability as tr

__all__ = [
    "RANKING_SCORES",
    "SCORES",
    "BackboneScores",
    "Ranking",
    "available_backbones",
    "imagenet_head",
    "probe_score",
    "rank_backbones",
    "score_embeddings",
    "score_task",
]

#: Every score, in table order.
SCORES = ("logme", "leep", "nce", "h_score", "knn")
#: The scores whose mean rank orders the candidates (see the module docstring).
RANKING_SCORES = ("leep", "nce", "knn")


@dataclass
class BackboneScores:
    """One backbone's scores (higher is better), the seconds each took, and the probe check."""

    backbone: str
    scores: dict[str, float]
    seconds: dict[str, float]
    embed_seconds: float
    n_train: int
    probe_score: float | None = None
    """The probe's main score (accuracy, or mAP for a multi-label task)."""
    probe_on: str | None = None
    probe_seconds: float | None = None
    combined_rank: float = 0.0


@dataclass
class Ranking:
    """Backbones ordered best first by :data:`RANKING_SCORES`, and the one chosen by the probe."""

    rows: list[BackboneScores]
    chosen: str
    task: str = ""
    """The task the backbones were ranked for."""
    ranking_scores: tuple[str, ...] = RANKING_SCORES
    seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)
    metric: str = "accuracy"
    """What ``probe_score`` is: ``accuracy``, or ``mAP`` for a multi-label task."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (for run.json)."""
        return {
            "chosen": self.chosen,
            "task": self.task,
            "metric": self.metric,
            "ranking_scores": list(self.ranking_scores),
            "seconds": round(self.seconds, 3),
            "rows": [asdict(r) for r in self.rows],
            "skipped": dict(self.skipped),
        }


def available_backbones(modality: str = "image") -> tuple[list[str], dict[str, str]]:
    """Names of the built-in backbones of ``modality`` (image backbones, or text encoders)
    whose weights are here, and why the others are not."""
    usable, skipped = [], {}
    for status in list_backbones(modality=modality):
        name = status.spec.name
        if ":" in name:  # generic timm:/torchvision:/hf: entries: only when asked for by name
            continue
        if status.available:
            usable.append(name)
        else:
            skipped[name] = status.detail
    return usable, skipped


def imagenet_head(ref: BackboneRef) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, b) of the backbone's ImageNet classifier acting on its pooled features, or None when
    it has none, as a text encoder (then LEEP and NCE are skipped)."""
    # lazy: torch takes seconds to import; only this path needs it
    from torch import nn

    if ref.modality == "text":
        return None
    backbone = ref.build()
    if backbone.imagenet_classes is None:
        return None
    model: Any = backbone.model
    if backbone.library == "timm":
        linear = model.get_classifier()
    else:
        linear = model.get_submodule(backbone._head_path)
    if not isinstance(linear, nn.Linear):
        return None
    weight = linear.weight.detach().double().numpy()
    bias = linear.bias.detach().double().numpy()
    return weight, bias


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def _timed(fn: Callable[[], float]) -> tuple[float, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def score_embeddings(
    features: np.ndarray,
    labels: Sequence[str],
    head: tuple[np.ndarray, np.ndarray] | None = None,
    shared: tr.Shared | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """All scores of one backbone's embeddings and the seconds each took.  ``head``: the
    ImageNet classifier (W, b) for LEEP and NCE (NaN without it).  ``shared``: the
    label-independent work on these ``features`` (``transferability.Shared``), done by the
    first call that needs it, whose scores' seconds include it."""
    y, _ = tr.encode(labels)
    x = np.asarray(features, dtype=np.float64)
    # One BLAS thread: on a few shared cores, threaded eigh/Gram products ran 10-30x slower.
    with threadpool_limits(limits=1, user_api="blas"):
        return _all_scores(x, y, head, tr.Shared() if shared is None else shared)


def _all_scores(
    x: np.ndarray, y: np.ndarray, head: tuple[np.ndarray, np.ndarray] | None, shared: tr.Shared
) -> tuple[dict[str, float], dict[str, float]]:
    scores: dict[str, float] = {}
    seconds: dict[str, float] = {}
    scores["logme"], seconds["logme"] = _timed(lambda: tr.logme(x, y, shared))
    if head is not None:
        t0 = time.perf_counter()
        proba = shared.get("source", lambda: _softmax(x @ head[0].T + head[1]))
        source = time.perf_counter() - t0  # shared by LEEP and NCE; charged to both
        scores["leep"], seconds["leep"] = _timed(lambda: tr.leep(proba, y))
        scores["nce"], seconds["nce"] = _timed(lambda: tr.nce(proba, y))
        seconds["leep"] += source
        seconds["nce"] += source
    else:
        scores["leep"] = scores["nce"] = float("nan")
        seconds["leep"] = seconds["nce"] = 0.0
    scores["h_score"], seconds["h_score"] = _timed(lambda: tr.shrinkage_h_score(x, y, shared))
    scores["knn"], seconds["knn"] = _timed(lambda: tr.knn_accuracy(x, y, shared=shared))
    return scores, seconds


def score_task(
    features: np.ndarray,
    task: Task,
    cells: Sequence[Sequence[str]],
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """:func:`score_embeddings` for one task's labels; a multi-label task scores each label
    as a yes/no question and averages (as LogME's authors do for multi-label data), doing the
    label-independent work (source softmax, spectra, nearest neighbours) once."""
    if not task.multi_label:
        return score_embeddings(features, [cell[0] for cell in cells], head)
    Y = task_target(task, cells)
    x = np.asarray(features, dtype=np.float64)
    shared = tr.Shared()
    per_label = [
        score_embeddings(x, [str(v) for v in Y[:, j]], head, shared) for j in range(Y.shape[1])
    ]
    scores = {k: float(np.nanmean([s[k] for s, _ in per_label])) for k in SCORES}
    seconds = {k: float(sum(t[k] for _, t in per_label)) for k in SCORES}
    return scores, seconds


def _cv3_map(features: np.ndarray, task: Task, cells: Sequence[Sequence[str]]) -> float:
    """3-fold CV mAP of the default logistic head of a multi-label task (NaN when a fold's
    training part lacks a label's positives or negatives)."""
    # lazy: scikit-learn's model selection only for this check
    from sklearn.model_selection import KFold

    Y = task_target(task, cells)
    proba = np.zeros(Y.shape)
    for train, test in KFold(3, shuffle=True, random_state=0).split(features):
        column = Y[train]
        if (column.all(axis=0) | ~column.any(axis=0)).any():
            return float("nan")
        head = task_head(task, "logistic", {}).fit(features[train], column)
        proba[test] = task_proba(task, head, features[test])
    return headline(task_metrics(task, cells, proba, n_boot=0))[1].value


def probe_score(embedded: EmbeddedData, task: Task) -> tuple[float, str, float]:
    """The default logistic head's main score for ``task`` (accuracy, or mAP for a
    multi-label task): on ``val`` when the data has it, else by 3-fold CV on train (the
    head's own C-search accuracy; a multi-label task's own CV mAP).  NaN when no score could
    be had.  Returns (score, "val" or "cv3", seconds)."""
    t0 = time.perf_counter()
    train = embedded.rows("train")
    X, cells = embedded.features[train], embedded.cells(task, "train")
    val = embedded.rows("val")
    if not val and task.multi_label:
        return _cv3_map(X, task, cells), "cv3", time.perf_counter() - t0
    head: Any = task_head(task, "logistic", {}).fit(X, task_target(task, cells))
    if val:
        proba = task_proba(task, head, embedded.features[val])
        metrics = task_metrics(
            task, embedded.cells(task, "val"), proba, thresholds=thresholds_of(task, head), n_boot=0
        )
        score, on = headline(metrics)[1].value, "val"
    else:
        searched = head.cv_scores_[np.isfinite(head.cv_scores_)]  # none: C was not searched
        score, on = (float(searched.max()) if searched.size else float("nan")), "cv3"
    return score, on, time.perf_counter() - t0


def _mean_ranks(rows: list[BackboneScores], names: Sequence[str]) -> np.ndarray:
    ranks = []
    for name in names:
        values = np.array([r.scores[name] for r in rows], dtype=np.float64)
        if np.isnan(values).any():
            continue
        order = (-values).argsort(kind="stable")
        rank = np.empty(len(rows))
        rank[order] = np.arange(1, len(rows) + 1)
        ranks.append(rank)
    return np.mean(ranks, axis=0) if ranks else np.ones(len(rows))


def rank_backbones(
    data: str | Path | Manifest,
    config: FitConfig | None = None,
    *,
    task: str | None = None,
    backbones: Sequence[str] | None = None,
    top: int = 2,
    progress: bool = False,
) -> Ranking:
    """Embed ``data`` with each backbone (cached), score the training split for ``task`` (the
    first by default), order the backbones by :data:`RANKING_SCORES`, then fit the logistic
    probe on the ``top`` best and choose the one with the highest probe score (ties go to the
    better score rank)."""
    if top < 1:
        raise ConfigError(f"top must be at least 1, got {top}")
    cfg = config or load_config()
    skipped: dict[str, str] = {}
    manifest: Manifest | None = None
    if backbones is None:  # the data's modality picks the candidates: scanned first
        check_pretrained(cfg)
        manifest = data if isinstance(data, Manifest) else scan_data(data, cfg)
        names, skipped = available_backbones(manifest.modality)
    else:
        names = list(dict.fromkeys(backbones))
    for name in names:  # LEEP and NCE read one network's ImageNet head
        require_single(
            name,
            "each candidate of rank-backbones",
            "rank its parts one by one, then fit the fusion with -b a+b",
        )
    if not names:
        raise BackboneError("no backbone is available here to rank; see `headstart backbones`")
    start = time.perf_counter()
    rows, embedded_by = [], {}
    chosen_task: Task | None = None
    for name in names:
        t0 = time.perf_counter()
        ref = resolve_backbone(name)
        if manifest is None:  # scanned (every file read and hashed) once, for all backbones
            check_pretrained(cfg)  # as embed_data would, before its scan
            manifest = data if isinstance(data, Manifest) else scan_data(data, cfg)
        embedded = embed_data(manifest, cfg, progress=progress, ref=ref)
        chosen_task = embedded.manifest.task(task)
        embed_seconds = time.perf_counter() - t0
        train = embedded.rows("train")
        scores, seconds = score_task(
            embedded.features[train],
            chosen_task,
            embedded.cells(chosen_task, "train"),
            imagenet_head(ref),
        )
        rows.append(BackboneScores(name, scores, seconds, embed_seconds, len(train)))
        embedded_by[name] = embedded
    assert chosen_task is not None  # names is not empty
    for row, rank in zip(rows, _mean_ranks(rows, RANKING_SCORES), strict=True):
        row.combined_rank = float(rank)
    rows.sort(key=lambda r: r.combined_rank)
    for row in rows[:top]:
        row.probe_score, row.probe_on, row.probe_seconds = probe_score(
            embedded_by[row.backbone], chosen_task
        )
    checked = [r for r in rows if r.probe_score is not None]
    # a NaN probe score (nothing to score on) must lose, not compare false with everything
    chosen = max(checked, key=lambda r: (_or_lowest(r.probe_score), -r.combined_rank)).backbone
    return Ranking(
        rows, chosen, chosen_task.name, RANKING_SCORES, time.perf_counter() - start, skipped,
        "mAP" if chosen_task.multi_label else "accuracy",
    )  # fmt: skip


def _or_lowest(score: float | None) -> float:
    return -math.inf if score is None or math.isnan(score) else score
