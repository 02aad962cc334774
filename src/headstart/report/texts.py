"""The report of a text run: where an image run shows photos, it shows the texts themselves.

Every text is escaped and shortened on the page, its whole text kept in the ``title`` attribute
(a tooltip).  Nothing here opens a sample's path: a text's path names a CSV row
(``<file>.csv#<line>``) or a ``.txt`` file, and the texts come from the run's manifest.csv.

In place of Grad-CAM, each error's words are coloured by occlusion
(:func:`headstart.explain.text.explain_text`: how much the predicted class's probability drops
without the word), cached like the overlays (by model files and text), so a rebuilt report runs
no encoder.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.cache import CacheRoot
from headstart.data import Task
from headstart.data.manifest import LABEL_SEPARATOR
from headstart.errors import HeadstartError
from headstart.fsutil import read_entry, write_entry
from headstart.report.run import RunFiles, task_title
from headstart.report.template import note, short

if TYPE_CHECKING:
    from headstart.explain.text import TextExplanation
    from headstart.model import Model

__all__ = ["EXAMPLES_PER_CLASS", "examples_html", "quote", "text_gallery"]

#: Training texts shown for each class in the data section.
EXAMPLES_PER_CLASS = 3
_GALLERY_CHARS = 400
_EXAMPLE_CHARS = 160


def quote(text: str, limit: int, cls: str = "txt") -> str:
    """A text as an escaped, shortened block whose tooltip holds all of it."""
    return f'<div class="{cls}" title="{escape(text)}">{escape(short(text, limit))}</div>'


def _runner_up(run: RunFiles, task: Task, row: dict[str, str], predicted: str) -> str:
    """The second most probable class of a multi-class row, as ``class NN%`` (or "")."""
    if task.multi_label:
        return ""
    scores = []
    for cls, column in zip(task.classes, run.columns(task)["p"], strict=True):
        try:
            scores.append((float(row.get(column) or "nan"), cls))
        except ValueError:
            continue
    others = sorted((s for s in scores if s[1] != predicted and not math.isnan(s[0])), reverse=True)
    return f"{others[0][1]} {others[0][0]:.0%}" if others else ""


def _words_key(info: dict[str, Any], task: Task, text: str) -> str:
    """Cache key of one text's word colours: the model (backbone, files with their digests,
    calibration), the task and the text."""
    model = json.dumps(
        [info.get("backbone"), info.get("files"), info.get("calibration")], sort_keys=True
    )
    return hashlib.sha256(f"words-v1:{task.name}:{model}:{text}".encode()).hexdigest()


def _marked(expl: TextExplanation, limit: int) -> str:
    """The text (shortened to ``limit`` characters) with each word's background showing its
    attribution: green for the predicted class, red against it; the score on hover."""
    finite = expl.scores[~np.isnan(expl.scores)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    out, at = [], 0
    for (start, end), score in zip(expl.spans, expl.scores, strict=True):
        if start >= limit:
            out.append("…")
            at = len(expl.text)
            break
        out.append(escape(expl.text[at:start]))
        word = escape(expl.text[start:end])
        if np.isnan(score) or scale <= 0:
            out.append(word)
        else:
            alpha = min(1.0, abs(float(score)) / scale) * 0.7
            rgb = "19,145,95" if score > 0 else "209,52,52"
            out.append(
                f'<span class="w" style="background:rgba({rgb},{alpha:.2f})" '
                f'title="{float(score):+.3f}">{word}</span>'
            )
        at = end
    out.append(escape(expl.text[at:]))
    return f'<div class="txt" title="{escape(expl.text)}">{"".join(out)}</div>'


def word_colours(
    run: RunFiles,
    task: Task,
    texts: list[str],
    model: Callable[[], Model | None],
    cache: CacheRoot,
) -> tuple[list[str | None], str | None]:
    """Each text as HTML with its words coloured by attribution to the predicted class (None
    where it could not be explained), and why none could be (None when some were)."""
    keys = [_words_key(run.info, task, t) for t in texts]
    out: list[str | None] = [None] * len(texts)
    for i, key in enumerate(keys):
        cached = read_entry(cache.overlays / f"{key}.txt")
        if cached is not None:
            out[i] = cached.decode("utf-8", errors="replace")
    todo = [i for i, html in enumerate(out) if html is None]
    if not todo:
        return out, None
    loaded = model()
    if loaded is None:
        return out, "the model bundle is unreadable"
    try:
        from headstart.explain.text import explain_text  # the encoder: only when not cached
    except ImportError as exc:
        return out, str(exc)
    why = None
    for i in todo:
        try:
            explained = explain_text(loaded, texts[i], task=task.name)
        except (HeadstartError, ImportError) as exc:  # noted in place; the report stands
            why = f"{type(exc).__name__}: {exc}"
            continue
        marked = _marked(explained, _GALLERY_CHARS)
        out[i] = marked
        write_entry(cache.overlays / f"{keys[i]}.txt", marked.encode())
    return out, why if all(h is None for h in out) else None


def text_gallery(
    run: RunFiles,
    task: Task,
    n: int,
    model: Callable[[], Model | None] | None = None,
    cache: CacheRoot | None = None,
) -> str:
    """The task's ``n`` most confident wrong answers with their texts: true label, predicted
    label, confidence, split and the runner-up class; with ``model`` and ``cache``, each
    text's words coloured by occlusion (:func:`word_colours`)."""
    heading = f"<h3>{escape(task_title(run, task))}</h3>" if len(run.tasks) > 1 else ""
    worst = run.worst_errors(task, n)
    if not worst:
        return heading + note("No held-out text was answered wrongly.")
    texts = run.texts()
    cols = run.columns(task)
    found = [texts.get(row["path"], "") for row in worst]
    coloured: list[str | None] = [None] * len(worst)
    why = None
    if model is not None and cache is not None and not task.multi_label:
        usable = [i for i, t in enumerate(found) if t]
        colours, why = word_colours(run, task, [found[i] for i in usable], model, cache)
        for i, html in zip(usable, colours, strict=True):
            coloured[i] = html
    cards = []
    for row, text, html in zip(worst, found, coloured, strict=True):
        predicted = row[cols["predicted"]] or "(none)"
        second = _runner_up(run, task, row, predicted)
        head = (
            f"<div><b>true</b> {escape(row[cols['label']] or '(none)')} · <b>predicted</b> "
            f"{escape(predicted)} · {float(row[cols['confidence']]):.0%} "
            f"({escape(row['split'])})</div>"
        )
        if html is not None:
            body = html
        else:
            body = quote(text, _GALLERY_CHARS) if text else note("Text not in manifest.csv.")
        after = f'<div class="path">runner-up: {escape(second)}</div>' if second else ""
        cards.append(
            f'<div class="err">{head}{body}{after}'
            f'<div class="path">{escape(row["path"])}</div></div>'
        )
    words = (
        " Word colours: how much the predicted class's probability drops when the word is "
        "left out (green: the word argued for it; red: against it; hover a word for its score)."
        if any(h is not None for h in coloured)
        else ""
    )
    intro = note(
        f"The {len(worst)} most confident wrong answers on the held-out splits, with the "
        f"texts the model read (hover a text for all of it).{words}"
        + (f" No word colours: {why}." if why else "")
    )
    return f'{heading}{intro}<div class="gallery">{"".join(cards)}</div>'


def examples_html(run: RunFiles, n: int = EXAMPLES_PER_CLASS) -> str:
    """Per task, a table of ``n`` texts of each class (training texts first)."""
    parts = ["<h3>Examples per class</h3>"]
    for task in run.tasks:
        if len(run.tasks) > 1:
            parts.append(f"<h4>{escape(task_title(run, task))}</h4>")
        rows = []
        for cls, found in run.examples(task, n).items():
            cells = "".join(
                f"<td>{quote(r.get('text', ''), _EXAMPLE_CHARS, 'ex')}"
                + _other_labels(task, r, cls)
                + "</td>"
                for r in found
            )
            cells += "<td></td>" * (n - len(found))
            rows.append(f"<tr><th>{escape(cls)}</th>{cells}</tr>")
        parts.append(f'<table class="examples"><tbody>{"".join(rows)}</tbody></table>')
    return "\n".join(parts)


def _other_labels(task: Task, row: dict[str, str], shown: str) -> str:
    """A multi-label row's other labels, under the text."""
    if not task.multi_label:
        return ""
    others = [x for x in (row.get(task.name) or "").split(LABEL_SEPARATOR) if x and x != shown]
    return f'<div class="path">also: {escape(", ".join(others))}</div>' if others else ""
