"""Sections of the report that need only the run's files: data, curves, metrics (every task)."""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np

from headstart.data import Task
from headstart.report import plots
from headstart.report.run import RunFiles, task_title
from headstart.report.template import Section, figure, note, pct, short, table
from headstart.report.texts import examples_html
from headstart.stats import (
    Interval,
    Metrics,
    MultiLabelMetrics,
    TaskMetrics,
    expected_calibration_error,
    reliability_bins,
)

__all__ = ["curves_section", "data_section", "metrics_section", "task_title"]

_MAX_PROBLEM_ROWS = 200


def data_section(run: RunFiles) -> Section:
    """Source, split source, counts per split and class of every task (with a chart of each
    multi-class task's balance), problems, duplicates."""
    r = run.run
    parts = [
        "<ul>",
        f"<li>Source: <code>{escape(r.source or r.data)}</code></li>",
        f"<li>Splits from: {escape(r.split_source)}</li>",
        f"<li>Data hash: <code>{escape(r.data_hash)}</code></li>",
        f"<li>{len(run.manifest)} {run.noun} used; "
        + "; ".join(escape(t.describe()) for t in run.tasks)
        + "</li>",
        "</ul>",
    ]
    for task in run.tasks:
        counts = run.counts(task)
        if len(run.tasks) > 1:
            parts.append(f"<h3>{escape(task_title(run, task))}</h3>")
        rows = [
            [c, *(counts[s].get(c, 0) for s in counts), sum(counts[s].get(c, 0) for s in counts)]
            for c in task.classes
        ]
        if not task.multi_label:
            rows.append(["all", *(sum(counts[s].values()) for s in counts), len(run.manifest)])
        heading = "label" if task.multi_label else "class"
        parts.append('<div class="row">')
        parts.append(table([heading, *counts, "total"], rows, numeric=range(1, len(counts) + 2)))
        chart = plots.class_balance(counts, task.classes, run.noun)
        parts.append(figure(chart, f"{run.noun.capitalize()} per {heading}"))
        parts.append("</div>")
    if run.modality == "text":
        parts.append(examples_html(run))
    parts.append(_problems_html(run))
    return Section("data", "1. Data", "\n".join(parts))


def _problems_html(run: RunFiles) -> str:
    left_out = [p for p in run.problems if p.get("kind") == "left out"]
    dups = [p for p in run.problems if p.get("kind", "").startswith("duplicate")]
    text = run.modality == "text"
    out = ["<h3>Problems found</h3>"]
    if left_out:
        what = "sample(s)" if text else "file(s)"
        out.append(note(f"{len(left_out)} {what} left out of the run:", "warn"))
        shown = left_out[:_MAX_PROBLEM_ROWS]
        out.append(table(["file", "reason"], [[p["path"], p["reason"]] for p in shown]))
        if len(left_out) > len(shown):
            out.append(note(f"... and {len(left_out) - len(shown)} more in problems.csv"))
    elif text:
        out.append(note("No unusable texts (empty or undecodable): every text found was used."))
    else:
        out.append(note("No unreadable files: every image found was used."))
    out.append("<h3>Exact duplicates</h3>")
    if dups:
        cross = [i for i, p in enumerate(dups) if p["kind"] == "duplicate across splits"]
        if cross:
            out.append(
                note(
                    f"{len(cross)} file(s) have an identical copy in another split: "
                    "leakage, held-out scores may be optimistic.",
                    "warn",
                )
            )
        shown = dups[:_MAX_PROBLEM_ROWS]
        rows = [[p["kind"], p["path"], p["reason"]] for p in shown]
        header = ["kind", "file", "detail"]
        if text:  # the duplicated text itself says more than its row number
            texts = run.texts()
            header.append("text")
            for row, p in zip(rows, shown, strict=True):
                row.append(short(texts.get(p["path"], ""), 120))
        out.append(table(header, rows, bad_rows=[i for i in cross if i < len(shown)]))
    else:
        out.append(
            note("No two texts are identical." if text else "No two files have the same bytes.")
        )
    return "\n".join(out)


def curves_section(run: RunFiles) -> Section:
    """Loss / validation score per epoch when the run was fine-tuned (``RUN/logs/metrics.csv``);
    what the unlabelled images did when the probe learnt from some."""
    series = run.curve_series()
    if series is None:
        body = note("Linear probe on frozen features: no training curves.")
    else:
        epochs, values = series
        body = figure(
            plots.training_curves(epochs, values),
            f"{len(epochs)} epochs, from logs/metrics.csv",
        )
    return Section("curves", "2. Training curves", body + _semi_supervised_html(run))


def _semi_supervised_html(run: RunFiles) -> str:
    record = run.run.semi_supervised
    if not record:
        return ""
    left = record.get("left_out_labelled", 0)
    unlike = record.get("left_out_unlike", 0)
    out = [
        "<h3>Semi-supervised head (unlabelled images)</h3>",
        note(
            f"{record.get('images', 0)} unlabelled images from {record.get('source', '?')}"
            + (f"; {left} left out because they are labelled images too" if left else "")
            + (
                f"; {unlike} left out because they look unlike every training image "
                "(out of distribution)"
                if unlike
                else ""
            )
            + f". Pseudo-labels must be {pct(record.get('precision_target', 0.0))} precise on "
            "out-of-fold labelled images; the method is chosen by cross-validation on the "
            "labelled training images."
        ),
    ]
    for name, task in record.get("tasks", {}).items():
        acc = task.get("pseudo_label_accuracy")
        rows = [
            [
                c["method"] + (" (chosen)" if c["method"] == task["chosen"] else ""),
                pct(c["cv_accuracy"]),
                "-" if c["pseudo_label_accuracy"] is None else pct(c["pseudo_label_accuracy"]),
                c["pseudo_label_checked"],
            ]
            for c in task.get("candidates", [])
        ]
        title = f"{name}: " if len(record.get("tasks", {})) > 1 else ""
        threshold = task.get("threshold")
        out.append(
            note(
                f"{title}{task['pseudo_labels']} pseudo-labels used"
                + (f" (confidence threshold {threshold:.3f})" if threshold is not None else "")
                + (f", {pct(acc)} right on held-out labelled images" if acc is not None else "")
                + f". {task['reason']}."
            )
        )
        header = ["method", "CV accuracy", "pseudo-label accuracy", "checked"]
        out.append(table(header, rows, numeric=(1, 2, 3)))
    return "\n".join(out)


def _card(title: str, value: Interval, n: int) -> str:
    return (
        f'<div class="card"><div>{escape(title)}</div><div class="big">{pct(value.value)}</div>'
        f'<div class="ci">95% CI [{pct(value.low)}, {pct(value.high)}] · n={n}</div></div>'
    )


def _multi_class(split: str, name: str, m: Metrics) -> tuple[list[str], list[str]]:
    cards = [
        _card(f"{split} {name}accuracy", m.accuracy, m.n),
        _card(f"{split} {name}macro-F1", m.macro_f1, m.n),
    ]
    rows = [
        [c.name, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", c.support]
        for c in m.per_class
    ]
    per_class = table(["class", "precision", "recall", "F1", "support"], rows, numeric=(1, 2, 3, 4))
    cm = plots.confusion_matrix(m.confusion, m.classes, f"{split} {name}confusion matrix")
    body = [f'<div class="row"><div>{per_class}</div>{figure(cm)}</div>']
    return cards, body


def _multi_label(split: str, name: str, m: MultiLabelMetrics) -> tuple[list[str], list[str]]:
    cards = [
        _card(f"{split} {name}mAP", m.mean_ap, m.n),
        _card(f"{split} {name}macro-F1", m.macro_f1, m.n),
        _card(f"{split} {name}micro-F1", m.micro_f1, m.n),
    ]
    rows = [
        [
            x.name,
            "n/a" if x.average_precision is None else f"{x.average_precision:.3f}",
            f"{x.precision:.3f}",
            f"{x.recall:.3f}",
            f"{x.f1:.3f}",
            f"{x.threshold:.3f}",
            x.support,
        ]
        for x in m.per_label
    ]
    head = ["label", "AP", "precision", "recall", "F1", "threshold", "support"]
    body = [
        note(
            f"Subset accuracy {pct(m.subset_accuracy)}, Hamming loss {m.hamming_loss:.3f}. "
            "Each label's threshold is the F1-best one on the validation predictions (see "
            "Validation in the model card)."
        ),
        table(head, rows, numeric=range(1, 7)),
    ]
    return cards, body


def _render(split: str, name: str, m: TaskMetrics) -> tuple[list[str], list[str]]:
    if isinstance(m, MultiLabelMetrics):
        return _multi_label(split, name, m)
    return _multi_class(split, name, m)


def metrics_section(run: RunFiles) -> Section:
    """Per split and task: headline metrics with 95% intervals, the per-class (or per-label)
    table, the confusion matrix of multi-class tasks, and their reliability diagrams."""
    cards: list[str] = []
    bodies: list[str] = []
    for split, per_task in run.metrics.items():
        for task in run.tasks:
            m = per_task.get(task.name)
            if m is None:
                continue
            name = f"{task.name} " if len(run.tasks) > 1 else ""
            task_cards, body = _render(split, name, m)
            cards += task_cards
            bodies.append(f"<h3>{escape(split)} split{': ' + escape(name) if name else ''} "
                          f"({m.n} {run.noun})</h3>")  # fmt: skip
            bodies += body
    parts = [
        f'<div class="cards">{"".join(cards)}</div>',
        note(f"Intervals: percentile bootstrap over the held-out {run.noun}."),
        *bodies,
        "<h3>Calibration</h3>",
    ]
    parts += [_reliability(run, task) for task in run.tasks if not task.multi_label]
    if all(t.multi_label for t in run.tasks):
        parts.append(note("Multi-label tasks: see each label's threshold and F1 above."))
    return Section("metrics", "3. Metrics", "\n".join(parts))


def _reliability(run: RunFiles, task: Task) -> str:
    bins: dict[str, Any] = {}
    index = {c: i for i, c in enumerate(task.classes)}
    for split in run.metrics:
        proba, truth = run.probabilities(split, task)
        keep = [i for i, cell in enumerate(truth) if cell and cell[0] in index]
        if not keep:
            continue
        y = np.array([index[truth[i][0]] for i in keep], dtype=np.intp)
        bins[split] = (reliability_bins(proba[keep], y), expected_calibration_error(proba[keep], y))
    title = task_title(run, task)
    if not bins:
        return note(f"No predictions.csv in the run: no reliability diagram {title}".strip())
    eces = ", ".join(f"{s} {e:.3f}" for s, (_, e) in bins.items())
    return figure(
        plots.reliability_diagram(bins, run.noun),
        (f"{title}: " if title else "")
        + f"Expected calibration error (ECE, 15 bins): {eces}. Bars below the "
        "diagonal: over-confident; above: under-confident.",
    )
