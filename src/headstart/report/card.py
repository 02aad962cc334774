"""The model card: data, intended use and limits (worded from the run's facts), provenance."""

from __future__ import annotations

from html import escape
from typing import Any

from headstart.report.run import RunFiles
from headstart.report.tasks import task_limits, task_metrics_line, tasks_of
from headstart.report.template import Section, pct, table

__all__ = ["card_section", "limits"]

_FEW_PER_CLASS = 50
_IMBALANCE = 3.0


def _training_kind(run: RunFiles) -> str:
    head = run.info.get("head", {}).get("kind", "?")
    backbone = run.info.get("backbone", {}).get("name", "?")
    if not run.info.get("config", {}).get("backbone", {}).get("pretrained", True):
        return (
            f"a {backbone} network trained from scratch (random initialisation), with a {head} head"
        )
    if run.curves:
        return f"a {backbone} network pretrained on ImageNet, fine-tuned, with a {head} head"
    probe = "a linear probe (logistic regression)" if head == "logistic" else f"a {head} head"
    return f"{probe} on frozen features of {backbone}, a network pretrained on ImageNet"


def limits(run: RunFiles) -> tuple[str, list[str]]:
    """The intended-use sentence and the list of limits, worded from the run's numbers."""
    if tasks_of(run):
        return task_limits(run)
    classes = run.classes
    train = run.counts().get("train", {})
    per_class = [train.get(c, 0) for c in classes]
    intended = (
        f"Sorts an image into one of {len(classes)} classes ({', '.join(classes)}), "
        f"using {_training_kind(run)}. Trained on {sum(per_class)} images "
        f"({min(per_class, default=0)}-{max(per_class, default=0)} per class) "
        f"from {run.run.get('data', '?')}."
    )
    out = [
        "It always answers with one of these classes: an image of anything else still gets one "
        "of them, often with high confidence. There is no 'none of the above'.",
        "It has only seen images like those in the training folders: other cameras, lighting, "
        "backgrounds, framing or populations than the data's are not covered by these numbers.",
    ]
    if run.curves is None:
        out.append(
            "The backbone was not trained on this data: it sees images as ImageNet taught it, so "
            "classes that differ in ways ImageNet does not separate (fine texture, medical or "
            "satellite imagery, text) may need fine-tuning."
        )
    if per_class and min(per_class) < _FEW_PER_CLASS:
        out.append(
            f"Few training images ({min(per_class)} for the smallest class): expect accuracy to "
            "change noticeably with more data, and treat per-class numbers as rough."
        )
    if per_class and min(per_class) > 0 and max(per_class) / min(per_class) >= _IMBALANCE:
        out.append(f"Classes are imbalanced ({max(per_class)}:{min(per_class)} in training).")
    for split, m in run.metrics.items():
        acc = m["accuracy"]
        out.append(
            f"The {split} set has {m['n']} images, so its accuracy is only known to within "
            f"{pct(acc['low'])}-{pct(acc['high'])} (95% interval)."
        )
        weak = sorted(m["per_class"], key=lambda c: c["recall"])[:2]
        if weak and weak[0]["recall"] < acc["value"]:
            names = ", ".join(f"{c['name']} (recall {c['recall']:.2f})" for c in weak)
            out.append(f"Weakest classes on {split}: {names}.")
    if run.run.get("cross_split_duplicates"):
        out.append(
            f"{run.run['cross_split_duplicates']} duplicate image group(s) cross splits: "
            "held-out scores may be optimistic."
        )
    return intended, out


def _kv(rows: list[tuple[str, Any]]) -> str:
    return table(None, [[k, v] for k, v in rows])


def card_section(run: RunFiles) -> Section:
    """Model card: data, intended use, limits, metrics, backbone, head, config, versions."""
    info, r = run.info, run.run
    bb = info.get("backbone", {})
    head = info.get("head", {})
    intended, lims = limits(run)
    counts = ", ".join(f"{s} {sum(c.values())}" for s, c in run.counts().items())
    metrics = task_metrics_line(run) or "; ".join(
        f"{s} accuracy {pct(m['accuracy']['value'])} "
        f"[{pct(m['accuracy']['low'])}, {pct(m['accuracy']['high'])}], "
        f"macro-F1 {pct(m['macro_f1']['value'])}"
        for s, m in run.metrics.items()
    )
    files = info.get("files", {})
    rows: list[tuple[str, Any]] = [
        ("Data", f"{r.get('data', '?')} (splits from {r.get('split_source', '?')}; {counts})"),
        ("Data hash", r.get("data_hash", "?")),
        ("Metrics", metrics or "none"),
        ("Backbone", f"{bb.get('name', '?')} ({bb.get('feature_dim', '?')} features)"),
        ("Backbone weights sha256", bb.get("weights_sha256", "?")),
        ("Bundled backbone file sha256", files.get("backbone.safetensors", "not bundled")),
        ("Preprocessing", ", ".join(f"{k} {v}" for k, v in bb.get("preprocessing", {}).items())),
        ("Head", f"{head.get('kind', '?')}; parameters {head.get('params', {})}"),
        ("Bundle format", f"{info.get('format', '?')} version {info.get('format_version', '?')}"),
        ("Created", info.get("created", "?")),
        ("Versions", ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())),
    ]
    body = [
        "<h3>Intended use</h3>",
        f"<p>{escape(intended)}</p>",
        "<h3>Limits</h3>",
        "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in lims) + "</ul>",
        "<h3>Facts</h3>",
        _kv(rows),
        "<h3>Resolved configuration</h3>",
        f"<pre>{escape(run.config_text or 'config.yaml missing')}</pre>",
    ]
    return Section("card", "6. Model card", "\n".join(body))
