"""Which words of a text a text model's answer rests on: attributions by occlusion.

Each word is removed in turn and the text scored again; a word's attribution is how much the
target class's probability drops without it (positive: the word argues for the class; negative:
against it).  All the variants go through the encoder in one call with the whole text, so the
answer costs one batch of ``words + 1`` texts.  Probabilities are the model's calibrated ones,
exactly what ``headstart predict`` reports; any head works (no gradients are needed).

>>> from headstart import load
>>> from headstart.explain.text import explain_text, save_html
>>> expl = explain_text(load("runs/x/model"), "my card was declined")  # doctest: +SKIP
>>> expl.top_words(3), expl.target, expl.probability                   # doctest: +SKIP
>>> save_html([expl], "why.html")                                      # doctest: +SKIP
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.data.texts import text_problem
from headstart.errors import ConfigError, DataError
from headstart.fsutil import atomic_write_text

if TYPE_CHECKING:
    from headstart.model import Model

__all__ = [
    "MAX_WORDS",
    "METHOD",
    "WORD",
    "TextExplanation",
    "explain_text",
    "render_html",
    "save_html",
    "words_of",
]

METHOD = "occlusion"
#: A word: letters, digits and underscores, with inner apostrophes (don't, l'eau).  What lies
#: between words (spaces, punctuation) stays in every variant and gets no attribution.
WORD = re.compile(r"\w+(?:['’]\w+)*")
#: Only the first words are scored: an encoder reads a few hundred tokens at most, and the
#: words after its limit change nothing.
MAX_WORDS = 256
#: A text of one word, removed, leaves nothing to embed; this stands for the empty text.
EMPTY = "."


@dataclass(frozen=True)
class TextExplanation:
    """Word attributions for one text.

    ``words`` and ``spans`` (start, end character offsets in ``text``) list the words in order;
    ``scores[i]`` is the target's probability on the whole text minus its probability without
    word i (NaN for words after the first :data:`MAX_WORDS`, which were not scored); a very
    confident model's drops may be tiny (e.g. 1e-9) yet still rank the words.
    ``target``/``probability``: the explained class and its probability on the whole text;
    ``predicted``/``predicted_probability``: the model's most probable class (equal unless
    another target was asked for); ``task``: the task explained.  For a multi-label task the
    probabilities are each label's own."""

    text: str
    words: list[str]
    spans: list[tuple[int, int]]
    scores: np.ndarray
    target: str
    probability: float
    predicted: str
    predicted_probability: float
    task: str
    method: str = METHOD

    def top_words(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` words with the largest attribution (those arguing most for the target)."""
        order = [i for i in np.argsort(-self.scores, kind="stable") if not np.isnan(self.scores[i])]
        return [(self.words[i], float(self.scores[i])) for i in order[:k]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every word with its offsets and score (null when not scored)."""
        words = [
            {
                "word": w,
                "start": s,
                "end": e,
                "score": None if np.isnan(v) else float(f"{v:.6g}"),
            }
            for w, (s, e), v in zip(self.words, self.spans, self.scores, strict=True)
        ]
        return {
            "text": self.text,
            "method": self.method,
            "task": self.task,
            "target": self.target,
            "probability": round(self.probability, 6),
            "predicted": self.predicted,
            "predicted_probability": round(self.predicted_probability, 6),
            "words": words,
        }


def words_of(text: str) -> list[tuple[int, int]]:
    """The (start, end) offsets of ``text``'s words (see :data:`WORD`)."""
    return [m.span() for m in WORD.finditer(text)]


def _without(text: str, span: tuple[int, int]) -> str:
    """``text`` with the span removed (the space before it too, so no gap is left)."""
    start, end = span
    head = text[:start].rstrip(" \t") if start and text[start - 1] in " \t" else text[:start]
    joined = (head + text[end:]).strip()
    return joined or EMPTY


def _drops(proba: np.ndarray, column: int, multi_label: bool) -> np.ndarray:
    """The target's probability on the whole text (row 0) minus on each variant (rows 1..).
    For a multi-class task near certainty the drop is taken from the other classes' mass
    (``1 - p`` computed without cancellation): a confident model's probability rounds to 1.0
    with and without most words, and the tiny mass left to the others still ranks them."""
    plain = proba[0, column] - proba[1:, column]
    if multi_label or proba[0, column] <= 0.5:
        return plain
    others = np.delete(proba, column, axis=1).sum(axis=1)
    return np.asarray(others[1:] - others[0])


def explain_text(
    model: Model,
    text: str,
    target: str | None = None,
    *,
    task: str | None = None,
) -> TextExplanation:
    """Word attributions of ``text`` for ``target`` (default: the predicted class) of ``task``
    (default: the first) by occlusion (see the module doc).  A :class:`ConfigError` for an
    image model or an unknown task or class, a :class:`DataError` for an unusable text."""
    if model.modality != "text":
        raise ConfigError(
            f"word attributions are for text models; {model.path or 'this model'} classifies "
            "images (explain it with Grad-CAM)"
        )
    chosen = model.task(task)
    if target is not None and target not in chosen.classes:
        where = f" of task '{chosen.name}'" if len(model.tasks) > 1 else ""
        known = ", ".join(chosen.classes)
        raise ConfigError(f"unknown target class '{target}'{where}; known: {known}")
    text = text.strip()
    problem = text_problem(text)
    if problem is not None:
        raise DataError(f"cannot explain this text: {problem}")
    spans = words_of(text)
    scored = spans[:MAX_WORDS]
    variants = [_without(text, span) for span in scored]
    probas, _ = model.score_texts([text, *variants])  # one encoder call for all of them
    proba = probas[chosen.name]
    whole = proba[0]
    best = int(np.argmax(whole))
    column = best if target is None else chosen.classes.index(target)
    scores = np.full(len(spans), np.nan)
    scores[: len(scored)] = _drops(proba, column, chosen.multi_label)
    return TextExplanation(
        text=text,
        words=[text[s:e] for s, e in spans],
        spans=spans,
        scores=scores,
        target=chosen.classes[column],
        probability=float(whole[column]),
        predicted=chosen.classes[best],
        predicted_probability=float(whole[best]),
        task=chosen.name,
    )


def _colour(score: float, scale: float) -> str:
    """A background for a score: green for, red against the target, stronger the larger."""
    if np.isnan(score) or scale <= 0:
        return "transparent"
    alpha = min(1.0, abs(score) / scale) * 0.75
    rgb = "19,145,95" if score > 0 else "209,52,52"
    return f"rgba({rgb},{alpha:.3f})"


def _marked(expl: TextExplanation) -> str:
    """The text as HTML with each word's attribution as its background (the score on hover)."""
    finite = expl.scores[~np.isnan(expl.scores)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    out, at = [], 0
    for (start, end), score in zip(expl.spans, expl.scores, strict=True):
        out.append(html.escape(expl.text[at:start]))
        shown = "not scored" if np.isnan(score) else f"{score:+.3g}"
        out.append(
            f'<span class="w" style="background:{_colour(float(score), scale)}" '
            f'title="{shown}">{html.escape(expl.text[start:end])}</span>'
        )
        at = end
    out.append(html.escape(expl.text[at:]))
    return "".join(out)


_STYLE = (
    "body{font:16px/1.6 system-ui,sans-serif;color:#1d2330;max-width:860px;margin:24px auto;"
    "padding:0 16px}h1{font-size:20px}section{border-top:1px solid #e7ebf2;padding:12px 0}"
    ".meta{color:#5b6478;font-size:14px}.text{font-size:18px;line-height:2}"
    ".w{border-radius:4px;padding:1px 2px}.key span{padding:1px 6px;border-radius:4px;"
    "margin-right:8px}table{border-collapse:collapse;font-size:14px}"
    "td{padding:2px 10px 2px 0}"
)


def render_html(explanations: Sequence[TextExplanation], title: str = "Word attributions") -> str:
    """A small self-contained HTML page (no script, no external file) showing each text with
    its words highlighted by attribution and its most supporting words."""
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>"
        f"{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='key meta'>"
        f"<span style='background:{_colour(1.0, 1.0)}'>for the class</span>"
        f"<span style='background:{_colour(-1.0, 1.0)}'>against it</span>"
        "removing a word changes the class's probability by its score (hover a word)</p>"
    ]
    for expl in explanations:
        also = ""
        if expl.predicted != expl.target:
            also = f"; predicted {html.escape(expl.predicted)} ({expl.predicted_probability:.3f})"
        rows = "".join(
            f"<tr><td>{html.escape(w)}</td><td>{s:+.3g}</td></tr>" for w, s in expl.top_words(5)
        )
        parts.append(
            f"<section><p class='meta'>task {html.escape(expl.task)} · explained "
            f"<b>{html.escape(expl.target)}</b> ({expl.probability:.3f}){also} · "
            f"{expl.method}</p><p class='text'>{_marked(expl)}</p>"
            f"<table><tr><td class='meta'>word</td><td class='meta'>score</td></tr>{rows}"
            "</table></section>"
        )
    parts.append("</body></html>\n")
    return "".join(parts)


def save_html(
    explanations: Sequence[TextExplanation], path: str | Path, title: str = "Word attributions"
) -> Path:
    """Write :func:`render_html` to ``path`` (atomically; parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_html(explanations, title))
    return path
