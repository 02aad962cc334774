"""Report sections for multi-label and multi-task runs: label counts and metrics per task.

The single-label sections (error gallery with Grad-CAM, embedding map coloured by class,
reliability diagram of top-1 probabilities) have no one obvious meaning with several tasks or
label sets, so a task run's report says so instead of drawing something misleading.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from html import escape
from typing import Any

from headstart.data.manifest import LABEL_SEPARATOR
from headstart.report import plots
from headstart.report.run import RunFiles
from headstart.report.template import Section, figure, note, pct, table

__all__ = ["task_data_section", "task_metrics_section", "tasks_of"]


def tasks_of(run: RunFiles) -> list[dict[str, Any]]:
    """The bundle's task records (name, classes, multi_label); empty for a plain run."""
    return [entry["task"] for entry in run.info.get("tasks", [])]


def _counts(run: RunFiles, task: str) -> dict[str, Counter[str]]:
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for row in run.manifest:
        cell = row.get(task, "")
        per[row["split"]].update(x for x in cell.split(LABEL_SEPARATOR) if x)
    return {s: per[s] for s in ("train", "val", "test") if s in per}


def task_data_section(run: RunFiles) -> Section:
    """Source and, per task, how many images of each split carry each label."""
    r = run.run
    parts = [
        "<ul>",
        f"<li>Source: <code>{escape(str(r.get('data', '?')))}</code></li>",
        f"<li>Splits from: {escape(str(r.get('split_source', '?')))}</li>",
        f"<li>{len(run.manifest)} images used, {len(tasks_of(run))} task(s)</li>",
        "</ul>",
    ]
    for task in tasks_of(run):
        kind = "multi-label" if task["multi_label"] else "multi-class"
        counts = _counts(run, task["name"])
        rows = [[c, *(counts[s][c] for s in counts)] for c in task["classes"]]
        parts.append(f"<h3>{escape(task['name'])} ({kind}, {len(task['classes'])} labels)</h3>")
        parts.append(table(["label", *counts], rows, numeric=range(1, len(counts) + 1)))
    return Section("data", "1. Data", "\n".join(parts))


def _card(title: str, d: dict[str, Any], n: int) -> str:
    return (
        f'<div class="card"><div>{escape(title)}</div><div class="big">{pct(d["value"])}</div>'
        f'<div class="ci">95% CI [{pct(d["low"])}, {pct(d["high"])}] · n={n}</div></div>'
    )


def _multi_label(split: str, name: str, m: dict[str, Any]) -> list[str]:
    cards = [
        _card(f"{split} {name} mAP", m["mean_ap"], m["n"]),
        _card(f"{split} {name} macro-F1", m["macro_f1"], m["n"]),
        _card(f"{split} {name} micro-F1", m["micro_f1"], m["n"]),
    ]
    rows = [
        [
            x["name"],
            "n/a" if x["average_precision"] is None else f"{x['average_precision']:.3f}",
            f"{x['precision']:.3f}",
            f"{x['recall']:.3f}",
            f"{x['f1']:.3f}",
            f"{x['threshold']:.3f}",
            x["support"],
        ]
        for x in m["per_label"]
    ]
    head = ["label", "AP", "precision", "recall", "F1", "threshold", "support"]
    extra = (
        f"Subset accuracy {pct(m['subset_accuracy'])}, Hamming loss {m['hamming_loss']:.3f}. "
        "Thresholds were tuned on the val split (F1-best per label)."
    )
    return [
        f'<div class="cards">{"".join(cards)}</div>',
        note(extra),
        table(head, rows, numeric=range(1, 7)),
    ]


def _multi_class(split: str, name: str, m: dict[str, Any]) -> list[str]:
    cards = [
        _card(f"{split} {name} accuracy", m["accuracy"], m["n"]),
        _card(f"{split} {name} macro-F1", m["macro_f1"], m["n"]),
    ]
    rows = [
        [c["name"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]]
        for c in m["per_class"]
    ]
    per_class = table(["class", "precision", "recall", "F1", "support"], rows, numeric=(1, 2, 3, 4))
    cm = plots.confusion_matrix(m["confusion"], m["classes"], f"{split} {name}: confusion")
    return [
        f'<div class="cards">{"".join(cards)}</div>',
        f'<div class="row"><div>{per_class}</div>{figure(cm, f"{split} {name} confusion")}</div>',
    ]


def task_metrics_section(run: RunFiles) -> Section:
    """Per split and task: headline metrics with intervals and the per-class/label table."""
    parts = [note("Intervals: percentile bootstrap over the held-out images.")]
    for split, record in run.metrics.items():
        for name, m in record.get("tasks", {}).items():
            parts.append(f"<h3>{escape(split)} split: {escape(name)} ({m['n']} images)</h3>")
            render = _multi_label if m.get("kind") == "multi_label" else _multi_class
            parts += render(split, name, m)
    parts.append(
        note(
            "The error gallery, embedding map and reliability diagram are drawn for "
            "single-label models only; predictions.csv holds every probability."
        )
    )
    return Section("metrics", "3. Metrics", "\n".join(parts))


def task_limits(run: RunFiles) -> tuple[str, list[str]]:
    """Intended use and limits of a multi-label / multi-task model."""
    described = []
    for task in tasks_of(run):
        what = "any of" if task["multi_label"] else "one of"
        described.append(f"{task['name']}: {what} {len(task['classes'])} labels")
    intended = (
        f"Answers {len(described)} question(s) about an image ({'; '.join(described)}), "
        f"from {run.run.get('data', '?')}."
    )
    out = [
        "A multi-label task answers with every label whose probability reaches its threshold "
        "(tuned on val): possibly none. A multi-class task always picks one of its classes.",
        "It has only seen images like those in the training data: other cameras, lighting, "
        "backgrounds or framing are not covered by these numbers.",
    ]
    for split, record in run.metrics.items():
        for name, m in record.get("tasks", {}).items():
            key = "mean_ap" if m.get("kind") == "multi_label" else "accuracy"
            d = m[key]
            out.append(
                f"{split} {name}: {key.replace('_', ' ')} {pct(d['value'])}, known to within "
                f"{pct(d['low'])}-{pct(d['high'])} (95% interval, n={m['n']})."
            )
    return intended, out


def task_metrics_line(run: RunFiles) -> str:
    """One line of headline numbers for the model card."""
    parts = []
    for split, record in run.metrics.items():
        for name, m in record.get("tasks", {}).items():
            key = "mean_ap" if m.get("kind") == "multi_label" else "accuracy"
            parts.append(f"{split} {name} {key.replace('_', ' ')} {pct(m[key]['value'])}")
    return "; ".join(parts)
