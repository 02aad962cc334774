"""The files explore writes (each atomically): one CSV per finding and a JSON summary.

- ``clusters.csv``: ``path,kmeans,hdbscan,agglomerative`` (-1 = HDBSCAN noise), data order.
- ``outliers.csv``: ``path,score,isolation_forest,lof,knn``, most unusual first.
- ``label_issues.csv``: ``path,given,suggested,score,flagged``: every judged row, most
  suspicious first (score = 1 - label quality); ``flagged`` = 1 where confident learning calls
  the label wrong.  All rows, not only the flagged: a wrong label the method just misses (a
  flipped label the probe puts on a third class) still ranks near the top, and a user picks
  their own cut-off.  Header alone when the data is unlabelled.
- ``near_duplicates.csv``: ``path_a,path_b,label_a,label_b,cosine,pixel_correlation,kind``
  (kind ``exact`` = same bytes, ``near`` = same picture re-encoded/resized/cropped).
- ``class_overlap.csv``: ``class_a,class_b,score,examples``, most confused first.
- ``summary.json``: sizes, the task, per-method cluster scores, counts, notes and step timings.

Paths are relative to the data root (POSIX), as in ``fit``'s files.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart.explore.analysis import Exploration
from headstart.explore.clusters import METHODS
from headstart.explore.outliers import DETECTORS
from headstart.fsutil import atomic_write_text

__all__ = ["FILES", "write_files"]

FILES = (
    "clusters.csv",
    "outliers.csv",
    "label_issues.csv",
    "near_duplicates.csv",
    "class_overlap.csv",
    "summary.json",
)


def write_files(exploration: Exploration, output: Path) -> list[Path]:
    """Write every file of the module docstring into ``output``; returns their paths."""
    e = exploration
    output.mkdir(parents=True, exist_ok=True)
    n = len(e.paths)
    flagged = set(e.label_issues)
    tables: dict[str, tuple[Sequence[str], Iterable[Sequence[object]]]] = {
        "clusters.csv": (
            ["path", *METHODS],
            ([e.relative(i), *(int(e.clusters[m][i]) for m in METHODS)] for i in range(n)),
        ),
        "outliers.csv": (
            ["path", "score", *DETECTORS],
            (
                [e.relative(i), _num(e.outlier_score[i])]
                + [_num(e.outlier_detectors[d][i]) for d in DETECTORS]
                for i in np.argsort(-e.outlier_score, kind="stable")
            ),
        ),
        "label_issues.csv": (
            ["path", "given", "suggested", "score", "flagged"],
            (
                [e.relative(i), e.labels[i], e.predicted[i], _num(_score(e, i)), int(i in flagged)]
                for i in _by_suspicion(e)
            ),
        ),
        "near_duplicates.csv": (
            ["path_a", "path_b", "label_a", "label_b", "cosine", "pixel_correlation", "kind"],
            (
                [
                    e.relative(p.a),
                    e.relative(p.b),
                    e.labels[p.a] or "",
                    e.labels[p.b] or "",
                    _num(p.cosine),
                    _num(p.pixel_correlation),
                    "exact" if p.exact else "near",
                ]
                for p in e.near_duplicates
            ),
        ),
        "class_overlap.csv": (
            ["class_a", "class_b", "score", "examples"],
            ([o.class_a, o.class_b, _num(o.score), o.examples] for o in e.class_overlap),
        ),
    }
    written = []
    for name, (header, rows) in tables.items():
        written.append(_write_csv(output / name, header, rows))
    summary = output / "summary.json"
    atomic_write_text(summary, json.dumps(summary_of(e), indent=2, sort_keys=False) + "\n")
    return [*written, summary]


def summary_of(e: Exploration) -> dict[str, Any]:
    """The JSON summary (finite numbers only: NaN becomes null)."""
    return {
        "images": len(e.paths),
        "labelled": e.labelled,
        "task": e.task,
        "classes": e.classes,
        "cluster_metrics": {m: _clean(v) for m, v in e.cluster_metrics.items()},
        "label_issues": len(e.label_issues),
        "near_duplicates": len(e.near_duplicates),
        "class_overlap": [
            {"class_a": o.class_a, "class_b": o.class_b, "score": o.score}
            for o in e.class_overlap[:10]
        ],
        "notes": e.notes,
        "timings_s": {k: round(v, 3) for k, v in e.timings.items()},
    }


def _by_suspicion(e: Exploration) -> list[int]:
    """The judged rows, most suspicious first (flagged rows first among equal scores)."""
    if e.label_issue_score is None:
        return []
    score = e.label_issue_score
    flagged = set(e.label_issues)
    judged = [i for i in range(len(score)) if math.isfinite(score[i])]
    return sorted(judged, key=lambda i: (-float(score[i]), i not in flagged, i))


def _score(e: Exploration, row: int) -> float:
    return float("nan") if e.label_issue_score is None else float(e.label_issue_score[row])


def _num(value: float) -> str:
    return "" if not math.isfinite(float(value)) else f"{float(value):.4f}"


def _clean(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if math.isfinite(v) else None) for k, v in values.items()}


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path
