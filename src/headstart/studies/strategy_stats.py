"""The statistics and the record of ``compare-strategies``: per-row summaries over seeds,
paired contrasts of the best row with every other, the verdict sentence each contrast supports,
and the :class:`StrategyComparison` that holds them (JSON, CSV and Markdown forms).

Every run is scored on one task's main score (``metric``: accuracy, or ``mean_ap`` -- mAP --
for a multi-label task) and macro-F1; the records name the score by its key, so a multi-class
comparison's columns read ``accuracy`` as they always did.

* A row (one backbone and strategy) is summarised by its mean score and macro-F1 over the
  seeds with a 95% Student-t interval (:meth:`headstart.stats.summary.Summary.of`); one seed
  gives no interval, and says so.
* The best row (highest mean score; ties go to the cheaper) is compared with each other
  row *paired by seed* (same split, same seed): the mean of the per-seed score differences
  with its 95% paired t-interval, and McNemar's exact test
  (:func:`headstart.stats.paired.mcnemar_p`) on whether each image is predicted right (a
  multi-label image: its exact label set), over the predictions of all seeds pooled, each
  image paired with itself.
* A difference is called only when both agree: the paired interval excludes 0 (it needs two
  seeds or more) and McNemar's p is below 0.05; with one seed McNemar alone decides, and the
  sentence says there is no interval over seeds.  When the split is fixed (a test folder), every
  seed re-scores the same images, so the pooled McNemar counts an image once per seed: it says
  whether the runs differ on these images, while the paired interval covers seed-to-seed
  variation; requiring both keeps the verdict conservative.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from headstart.config import FitConfig
from headstart.stats.paired import ALPHA, mcnemar_p
from headstart.stats.summary import Summary
from headstart.studies.scoring import metric_title

__all__ = [
    "RESULT_COLUMNS",
    "Contrast",
    "Estimate",
    "Key",
    "RowSummary",
    "RunScore",
    "StrategyComparison",
    "best_row",
    "contrast",
    "result_columns",
    "results_csv",
    "summarise_rows",
]


def _named(record: dict[str, Any], metric: str) -> dict[str, Any]:
    """A record with its ``score`` fields named by the metric, in the same place."""
    names = {"score": metric, "score_diff": f"{metric}_diff"}
    return {names.get(k, k): v for k, v in record.items() if k != "metric"}


@dataclass(frozen=True)
class RunScore:
    """One training run: a backbone and strategy on one seed's split, scored on its test split
    (``score``: the task's main score, named by ``metric``)."""

    backbone: str
    strategy: str
    seed: int
    pretrained: bool
    score: float
    macro_f1: float
    seconds: float
    n_test: int
    scored_split: str
    metric: str = "accuracy"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record, the score under its metric's name (``accuracy``/``mean_ap``)."""
        return _named(asdict(self), self.metric)


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its 95% t-interval (``low``/``high`` None with one seed)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float], bounds: tuple[float, float] = (0.0, 1.0)) -> Estimate:
        """Mean and t-interval of ``values``, the interval clipped to ``bounds`` (a score
        cannot pass 100%, nor a difference of scores 100 points)."""
        s = Summary.of(values)
        if len(values) < 2:
            return cls(s.mean, None, None, len(values))
        low, high = max(s.low, bounds[0]), min(s.high, bounds[1])
        return cls(s.mean, low, high, len(values))

    def points(self) -> str:
        """``93.1 (95% CI 90.2..96.0)`` in percent, or ``93.1 (1 seed, no CI)``."""
        if self.low is None or self.high is None:
            return f"{100 * self.mean:.1f} (1 seed, no CI)"
        return f"{100 * self.mean:.1f} (95% CI {100 * self.low:.1f}..{100 * self.high:.1f})"

    def cell(self) -> str:
        """Short form for tables: ``93.1 [90.2, 96.0]``, or ``93.1`` with one seed."""
        if self.low is None or self.high is None:
            return f"{100 * self.mean:.1f}"
        return f"{100 * self.mean:.1f} [{100 * self.low:.1f}, {100 * self.high:.1f}]"


@dataclass(frozen=True)
class RowSummary:
    """One backbone and strategy over all seeds; ``seconds`` is the mean cost of one run."""

    label: str
    backbone: str
    strategy: str
    score: Estimate
    macro_f1: Estimate
    seconds: float
    metric: str = "accuracy"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record, the score under its metric's name."""
        return _named(asdict(self), self.metric)


@dataclass(frozen=True)
class Contrast:
    """The best row against another: paired over seeds, and McNemar on pooled predictions."""

    best: str
    other: str
    score_diff: Estimate
    macro_f1_diff: Estimate
    n_images: int
    only_best_right: int
    only_other_right: int
    p_value: float
    cost_ratio: float
    """The other row's seconds per run over the best row's."""
    significant: bool
    verdict: str
    metric: str = "accuracy"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record, the difference under ``<metric>_diff``."""
        return _named(asdict(self), self.metric)


Key = tuple[str, str, int]
"""(backbone, strategy, seed) of one run."""


def summarise_rows(runs: Sequence[RunScore], label_backbone: bool) -> list[RowSummary]:
    """One summary per (backbone, strategy) in the order the runs first appear."""
    groups: dict[tuple[str, str], list[RunScore]] = {}
    for r in runs:
        groups.setdefault((r.backbone, r.strategy), []).append(r)
    rows = []
    for (backbone, strategy), group in groups.items():
        # a strategy without a backbone (tfidf) records its own name as the backbone
        label = f"{strategy} ({backbone})" if label_backbone and backbone != strategy else strategy
        rows.append(
            RowSummary(
                label,
                backbone,
                strategy,
                Estimate.of([r.score for r in group]),
                Estimate.of([r.macro_f1 for r in group]),
                sum(r.seconds for r in group) / len(group),
                group[0].metric,
            )
        )
    return rows


def best_row(rows: Sequence[RowSummary]) -> RowSummary:
    """Highest mean score; ties go to the cheaper row."""
    return max(rows, key=lambda r: (r.score.mean, -r.seconds))


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x"


def _cost(best: str, other: str, ratio: float, significant: bool) -> str:
    if ratio >= 1.5:
        return f"; {best} is {'also ' if significant else ''}{_times(ratio)} cheaper"
    if ratio > 0 and 1 / ratio >= 1.5:
        return f"; {other} is {_times(1 / ratio)} cheaper"
    return ""


def _sentence(c: Contrast) -> str:
    d, n, p = c.score_diff, c.score_diff.n, f"McNemar p={c.p_value:.2g}"
    unit = "points" if c.metric == "accuracy" else f"{metric_title(c.metric)} points"
    seeds = f"{n} seed" + ("s" if n != 1 else "")
    if d.low is None or d.high is None:
        interval = f"{seeds}, so no interval over seeds"
    else:
        interval = f"95% CI {100 * d.low:+.1f}..{100 * d.high:+.1f} over {seeds}"
    if c.significant:
        text = f"{c.best} beats {c.other} by {100 * d.mean:.1f} {unit} ({interval}; {p})"
    else:
        text = (
            f"{c.best} and {c.other} are not distinguishable with {seeds} "
            f"({'' if c.metric == 'accuracy' else metric_title(c.metric) + ' '}"
            f"diff {100 * d.mean:+.1f}, {interval}; {p})"
        )
    return text + _cost(c.best, c.other, c.cost_ratio, c.significant)


def contrast(
    best: RowSummary,
    other: RowSummary,
    runs: Mapping[Key, RunScore],
    predictions: Mapping[Key, Mapping[Path, str]],
    truth: Mapping[int, Mapping[Path, str]],
) -> Contrast:
    """Compare ``best`` with ``other`` over the seeds both ran (see the module docstring).
    ``predictions`` and ``truth`` hold each test image's label (a multi-label image: its label
    set as one text, so equal text means the exact set is right)."""
    seeds = sorted(
        s
        for (b, st, s) in runs
        if (b, st) == (best.backbone, best.strategy) and (other.backbone, other.strategy, s) in runs
    )
    keys = [((best.backbone, best.strategy, s), (other.backbone, other.strategy, s)) for s in seeds]
    diff = (-1.0, 1.0)
    score = Estimate.of([runs[kb].score - runs[ko].score for kb, ko in keys], diff)
    f1 = Estimate.of([runs[kb].macro_f1 - runs[ko].macro_f1 for kb, ko in keys], diff)
    only_best = only_other = n = 0
    for s, (kb, ko) in zip(seeds, keys, strict=True):
        for path in set(predictions[kb]) & set(predictions[ko]):
            right_best = predictions[kb][path] == truth[s][path]
            right_other = predictions[ko][path] == truth[s][path]
            only_best += right_best and not right_other
            only_other += right_other and not right_best
            n += 1
    p = mcnemar_p(only_best, only_other)
    # best has the highest mean, so its paired differences average >= 0
    interval_ok = score.low is None or score.low > 0
    significant = p < ALPHA and score.mean > 0 and interval_ok
    ratio = other.seconds / best.seconds if best.seconds > 0 else math.inf
    c = Contrast(
        best.label, other.label, score, f1, n, only_best, only_other, p, ratio, significant, "",
        best.metric,
    )  # fmt: skip
    return replace(c, verdict=_sentence(c))


RESULT_COLUMNS = (
    "backbone", "strategy", "seed", "pretrained", "accuracy", "macro_f1", "seconds", "n_test",
    "scored_split",
)  # fmt: skip
"""The columns of a multi-class comparison's results.csv (see :func:`result_columns`)."""


def result_columns(metric: str = "accuracy") -> tuple[str, ...]:
    """results.csv's columns, the main score named by ``metric`` (``accuracy``/``mean_ap``)."""
    return tuple(metric if c == "accuracy" else c for c in RESULT_COLUMNS)


def results_csv(runs: Sequence[RunScore], metric: str = "accuracy") -> str:
    """One CSV row per run (:func:`result_columns`)."""
    columns = result_columns(metric)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for r in runs:
        row = r.to_dict()
        for key in (metric, "macro_f1"):
            row[key] = f"{row[key]:.6f}"
        row["seconds"] = f"{r.seconds:.3f}"
        row["pretrained"] = str(r.pretrained).lower()
        writer.writerow([row[c] for c in columns])
    return buffer.getvalue()


@dataclass
class StrategyComparison:
    """Every run's scores, the per-row summaries, the contrasts and the verdict."""

    data: Path
    output: Path
    config: FitConfig
    runs: list[RunScore] = field(default_factory=list)
    rows: list[RowSummary] = field(default_factory=list)
    contrasts: list[Contrast] = field(default_factory=list)
    scored: dict[int, str] = field(default_factory=dict)
    """Per seed, how its test split came about."""
    seconds: float = 0.0
    embeddings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per backbone, the probe's one-off embedding cost (seconds, computed, cached)."""
    task: str = "label"
    """The task every run is scored on."""
    metric: str = "accuracy"
    """Its main score: ``accuracy``, or ``mean_ap`` for a multi-label task."""

    @property
    def title(self) -> str:
        """The main score as it reads: ``accuracy`` or ``mAP``."""
        return metric_title(self.metric)

    @property
    def verdict(self) -> list[str]:
        """The headline (best row) then one sentence per contrast."""
        if not self.rows:
            return []
        best = best_row(self.rows)
        seeds = best.score.n
        head = (
            f"Best: {best.label}, {self.title} {best.score.points()} over {seeds} "
            f"seed{'s' if seeds != 1 else ''}, {best.seconds:.1f} s per run"
        )
        return [head, *(c.verdict for c in self.contrasts)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record of the whole comparison."""
        exact = (
            " (a multi-label image is right when its label set is)"
            if (self.metric != "accuracy")
            else ""
        )
        return {
            "data": str(self.data),
            "task": self.task,
            "metric": self.metric,
            "scored_split": {str(k): v for k, v in self.scored.items()},
            "interval": "95% Student-t over seeds (no interval with one seed)",
            "test": "McNemar exact on predictions pooled over seeds, paired per image" + exact,
            "verdict": self.verdict,
            "rows": [r.to_dict() for r in self.rows],
            "contrasts": [c.to_dict() for c in self.contrasts],
            "runs": [r.to_dict() for r in self.runs],
            "probe_embeddings": self.embeddings,
            "seconds": round(self.seconds, 3),
            "config": self.config.to_dict(),
        }

    def table_markdown(self) -> str:
        """The summary table, the scored splits and the verdict as Markdown."""
        lines = [
            f"| backbone | strategy | {self.title} % [95% CI] | macro-F1 % [95% CI] | "
            "seconds/run | seeds |",
            "|---|---|---|---|---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.backbone} | {r.strategy} | {r.score.cell()} | "
                f"{r.macro_f1.cell()} | {r.seconds:.1f} | {r.score.n} |"
            )
        lines += ["", "Intervals: 95% Student-t over seeds (none with one seed).", ""]
        lines += ["Scored on:", ""]
        lines += [f"- seed {s}: {text}" for s, text in sorted(self.scored.items())]
        lines += ["", *(f"- {v}" for v in self.verdict)]
        return "\n".join(lines) + "\n"
