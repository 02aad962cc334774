"""The model card: data, intended use and limits (worded from the run's facts), provenance."""

from __future__ import annotations

from html import escape
from typing import Any

from headstart.data import Task
from headstart.report.run import RunFiles
from headstart.report.template import Section, pct, table
from headstart.stats import Metrics, headline

__all__ = ["card_section", "limits"]

_FEW_PER_CLASS = 50
_IMBALANCE = 3.0


def _training_kind(run: RunFiles) -> str:
    head = run.info.get("head", {}).get("kind", "?")
    backbone = run.info.get("backbone", {}).get("name", "?")
    if head == "tfidf":
        return (
            "TF-IDF of word 1-2-grams and character 2-5-grams with a logistic regression, "
            "learned from this data alone (no pretrained network)"
        )
    if run.modality == "text":
        probe = "a linear probe (logistic regression)" if head == "logistic" else f"a {head} head"
        if run.curves:
            return f"the text encoder {backbone}, fine-tuned, with a {head} head"
        return f"{probe} on frozen embeddings of {backbone}, a pretrained text encoder"
    parts = run.info.get("backbone", {}).get("parts") or []
    if parts:
        names = ", ".join(str(p.get("name", "?")) for p in parts)
        probe = "a linear probe (logistic regression)" if head == "logistic" else f"a {head} head"
        return f"{probe} on the fused frozen features of {len(parts)} networks ({names})"
    if not run.info.get("config", {}).get("backbone", {}).get("pretrained", True):
        return (
            f"a {backbone} network trained from scratch (random initialisation), with a {head} head"
        )
    if run.curves:
        return f"a {backbone} network pretrained on ImageNet, fine-tuned, with a {head} head"
    probe = "a linear probe (logistic regression)" if head == "logistic" else f"a {head} head"
    return f"{probe} on frozen features of {backbone}, a network pretrained on ImageNet"


def _question(task: Task, sample: str = "image") -> str:
    names = ", ".join(task.classes)
    one = "an image" if sample == "image" else f"a {sample}"
    if task.multi_label:
        verb = "shows" if sample == "image" else "applies to"
        return f"which of {len(task.classes)} labels {one} {verb} ({names}), possibly none"
    return f"which of {len(task.classes)} classes {one} belongs to ({names})"


def _task_limits(run: RunFiles, task: Task) -> list[str]:
    out = []
    where = "" if len(run.tasks) == 1 else f" ({task.name})"
    train = run.counts(task).get("train", {})
    per_class = [train.get(c, 0) for c in task.classes]
    if per_class and min(per_class) < _FEW_PER_CLASS:
        out.append(
            f"Few training {run.noun}{where} ({min(per_class)} for the rarest "
            f"{'label' if task.multi_label else 'class'}): expect the numbers to change "
            "noticeably with more data, and treat per-class numbers as rough."
        )
    if per_class and min(per_class) > 0 and max(per_class) / min(per_class) >= _IMBALANCE:
        out.append(
            f"Classes are imbalanced{where} ({max(per_class)}:{min(per_class)} in training)."
        )
    for split, per_task in run.metrics.items():
        m = per_task.get(task.name)
        if m is None:
            continue
        name, value = headline(m)
        out.append(
            f"The {split} set{where} has {m.n} {run.noun}, so its {name} is only known to within "
            f"{pct(value.low)}-{pct(value.high)} (95% interval)."
        )
        if isinstance(m, Metrics):
            weak = sorted(m.per_class, key=lambda c: c.recall)[:2]
            if weak and weak[0].recall < m.accuracy.value:
                names = ", ".join(f"{c.name} (recall {c.recall:.2f})" for c in weak)
                out.append(f"Weakest classes on {split}{where}: {names}.")
    return out


def _text_limits(run: RunFiles) -> list[str]:
    """What a text model has not seen, and what it reads of a text."""
    out = [
        "It has only seen texts like those in the training data: other wording, topics, "
        "languages, lengths or writers than the data's are not covered by these numbers."
    ]
    text = run.info.get("backbone", {}).get("text") or {}
    if text.get("max_length"):
        out.append(
            f"It reads at most {text['max_length']} tokens of a text (the encoder's limit): "
            "what comes after them does not count."
        )
    if run.info.get("head", {}).get("kind") == "tfidf":
        out.append(
            "TF-IDF knows only the words and character sequences of its training texts: "
            "synonyms and paraphrases it never saw count for nothing."
        )
    elif run.curves is None:
        out.append(
            "The encoder was not trained on this data: distinctions its pretraining did not "
            "teach it (domain jargon, codes, negation in long texts) may need fine-tuning."
        )
    return out


def limits(run: RunFiles) -> tuple[str, list[str]]:
    """The intended-use sentence and the list of limits, worded from the run's numbers."""
    sample = "text" if run.modality == "text" else "image"
    questions = "; ".join(
        (f"{t.name}: " if len(run.tasks) > 1 else "") + _question(t, sample) for t in run.tasks
    )
    n_train = sum(1 for row in run.manifest if row.get("split") == "train")
    spread = []
    for task in run.tasks:
        train = run.counts(task).get("train", {})
        per_class = [train.get(c, 0) for c in task.classes]
        unit = "label" if task.multi_label else "class"
        of = f" of {task.name}" if len(run.tasks) > 1 else ""
        spread.append(f"{min(per_class, default=0)}-{max(per_class, default=0)} per {unit}{of}")
    intended = (
        f"Answers {questions}, using {_training_kind(run)}. Trained on {n_train} {run.noun} "
        f"({'; '.join(spread)}) from {run.run.data}."
    )
    out = []
    if any(not t.multi_label for t in run.tasks):
        anything = "a text about" if sample == "text" else "an image of"
        out.append(
            f"A multi-class answer is always one of the classes: {anything} anything else still "
            "gets one of them, often with high confidence. There is no 'none of the above'."
        )
    if any(t.multi_label for t in run.tasks):
        out.append(
            "A multi-label answer lists every label whose probability reaches its threshold "
            "(tuned on val): possibly none, and unknown things may still trigger labels."
        )
    if sample == "text":
        out += _text_limits(run)
    else:
        out.append(
            "It has only seen images like those in the training data: other cameras, lighting, "
            "backgrounds, framing or populations than the data's are not covered by these numbers."
        )
    if run.curves is None and sample == "image":
        out.append(
            "The backbone was not trained on this data: it sees images as ImageNet taught it, so "
            "classes that differ in ways ImageNet does not separate (fine texture, medical or "
            "satellite imagery, text) may need fine-tuning."
        )
    for task in run.tasks:
        out += _task_limits(run, task)
    if run.run.cross_split_duplicates:
        out.append(
            f"{run.run.cross_split_duplicates} duplicate {sample} group(s) cross splits: "
            "held-out scores may be optimistic."
        )
    return intended, out


def _kv(rows: list[tuple[str, Any]]) -> str:
    return table(None, [[k, v] for k, v in rows])


def _metrics_line(run: RunFiles) -> str:
    parts = []
    for split, per_task in run.metrics.items():
        for task in run.tasks:
            m = per_task.get(task.name)
            if m is None:
                continue
            name, value = headline(m)
            label = f"{split} {task.name} {name}" if len(run.tasks) > 1 else f"{split} {name}"
            parts.append(f"{label} {pct(value.value)} [{pct(value.low)}, {pct(value.high)}]")
    return "; ".join(parts)


def card_section(run: RunFiles) -> Section:
    """Model card: data, intended use, limits, metrics, backbone, head, config, versions."""
    info, r = run.info, run.run
    bb = info.get("backbone", {})
    head = info.get("head", {})
    intended, lims = limits(run)
    counts = ", ".join(f"{s} {n}" for s, n in r.counts.items())
    files = info.get("files", {})
    text = bb.get("text")
    if text:
        weights_row = (
            "Bundled encoder file sha256",
            files.get("encoder/model.safetensors", "not bundled"),
        )
        prep_row = ("Text encoding", ", ".join(f"{k} {v}" for k, v in text.items()))
    else:
        weights_row = (
            "Bundled backbone file sha256",
            files.get("backbone.safetensors", "not bundled"),
        )
        prep_row = (
            "Preprocessing",
            ", ".join(f"{k} {v}" for k, v in bb.get("preprocessing", {}).items()),
        )
    rows: list[tuple[str, Any]] = [
        ("Data", f"{r.data} (splits from {r.split_source}; {counts})"),
        ("Data hash", r.data_hash),
        ("Tasks", "; ".join(t.describe() for t in run.tasks)),
        ("Metrics", _metrics_line(run) or "none"),
        ("Validation", r.validation or "the val split"),
        ("Backbone", f"{bb.get('name', '?')} ({bb.get('feature_dim', '?')} features)"),
        ("Backbone weights sha256", bb.get("weights_sha256", "?")),
        weights_row,
        prep_row,
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
