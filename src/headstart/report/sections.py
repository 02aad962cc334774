"""Sections of the report that need only the run's files: data, curves, metrics, model card."""

from __future__ import annotations

from html import escape
from typing import Any

from headstart.evaluate import expected_calibration_error, reliability_bins
from headstart.report import plots
from headstart.report.run import RunFiles
from headstart.report.template import Section, figure, note, pct, table

__all__ = ["curves_section", "data_section", "metrics_section"]

_MAX_PROBLEM_ROWS = 200


def data_section(run: RunFiles) -> Section:
    """Source, split source, counts per split and class (with a chart), problems, duplicates."""
    counts = run.counts()
    classes = run.classes
    r = run.run
    parts = [
        "<ul>",
        f"<li>Source: <code>{escape(str(r.get('data', '?')))}</code></li>",
        f"<li>Splits from: {escape(str(r.get('split_source', '?')))}</li>",
        f"<li>Data hash: <code>{escape(str(r.get('data_hash', '?')))}</code></li>",
        f"<li>{len(run.manifest)} images used, {len(classes)} classes</li>",
        "</ul>",
    ]
    rows = [
        [c, *(counts[s].get(c, 0) for s in counts), sum(counts[s].get(c, 0) for s in counts)]
        for c in classes
    ]
    rows.append(["all", *(sum(counts[s].values()) for s in counts), len(run.manifest)])
    parts.append('<div class="row">')
    parts.append(table(["class", *counts, "total"], rows, numeric=range(1, len(counts) + 2)))
    parts.append(figure(plots.class_balance(counts, classes), "class balance", "Images per class"))
    parts.append("</div>")
    parts.append(_problems_html(run))
    return Section("data", "1. Data", "\n".join(parts))


def _problems_html(run: RunFiles) -> str:
    left_out = [p for p in run.problems if p.get("kind") == "left out"]
    dups = [p for p in run.problems if p.get("kind", "").startswith("duplicate")]
    out = ["<h3>Problems found</h3>"]
    if left_out:
        out.append(note(f"{len(left_out)} file(s) left out of the run:", "warn"))
        shown = left_out[:_MAX_PROBLEM_ROWS]
        out.append(table(["file", "reason"], [[p["path"], p["reason"]] for p in shown]))
        if len(left_out) > len(shown):
            out.append(note(f"... and {len(left_out) - len(shown)} more in problems.csv"))
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
        out.append(
            table(["kind", "file", "detail"], rows, bad_rows=[i for i in cross if i < len(shown)])
        )
    else:
        out.append(note("No two files have the same bytes."))
    return "\n".join(out)


def curves_section(run: RunFiles) -> Section:
    """Loss / accuracy per epoch when the run was fine-tuned (``RUN/logs/metrics.csv``)."""
    series = run.curve_series()
    if series is None:
        body = note("Linear probe on frozen features: no training curves.")
    else:
        epochs, values = series
        body = figure(
            plots.training_curves(epochs, values),
            "training curves",
            f"{len(epochs)} epochs, from logs/metrics.csv",
        )
    return Section("curves", "2. Training curves", body)


def _interval(d: dict[str, Any]) -> str:
    return f"[{pct(d['low'])}, {pct(d['high'])}]"


def metrics_section(run: RunFiles) -> Section:
    """Headline metrics with 95% intervals, per-class tables, confusion matrices, reliability."""
    parts = []
    cards = []
    for split, m in run.metrics.items():
        for key, name in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            cards.append(
                f'<div class="card"><div>{escape(split)} {name}</div>'
                f'<div class="big">{pct(m[key]["value"])}</div>'
                f'<div class="ci">95% CI {_interval(m[key])} · n={m["n"]}</div></div>'
            )
    parts.append(f'<div class="cards">{"".join(cards)}</div>')
    parts.append(note("Intervals: percentile bootstrap over the held-out images."))
    for split, m in run.metrics.items():
        parts.append(f"<h3>{escape(split)} split ({m['n']} images)</h3>")
        rows = [
            [
                c["name"],
                f"{c['precision']:.3f}",
                f"{c['recall']:.3f}",
                f"{c['f1']:.3f}",
                c["support"],
            ]
            for c in m["per_class"]
        ]
        per_class = table(
            ["class", "precision", "recall", "F1", "support"], rows, numeric=(1, 2, 3, 4)
        )
        cm = plots.confusion_matrix(m["confusion"], m["classes"], f"{split}: confusion matrix")
        parts.append(
            f'<div class="row"><div>{per_class}</div>'
            f"{figure(cm, f'{split} confusion matrix')}</div>"
        )
    parts.append("<h3>Calibration</h3>")
    bins = {}
    for split in run.metrics:
        proba, y = run.probabilities(split)
        if len(y):
            bins[split] = (reliability_bins(proba, y), expected_calibration_error(proba, y))
    if bins:
        eces = ", ".join(f"{s} {e:.3f}" for s, (_, e) in bins.items())
        parts.append(
            figure(
                plots.reliability_diagram(bins),
                "reliability diagram",
                f"Expected calibration error (ECE, 15 bins): {eces}. Bars below the "
                "diagonal: over-confident; above: under-confident.",
            )
        )
    else:
        parts.append(note("No predictions.csv in the run: no reliability diagram."))
    return Section("metrics", "3. Metrics", "\n".join(parts))
