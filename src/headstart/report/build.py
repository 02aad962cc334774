"""``build_report``: one self-contained HTML file from a run folder (images embedded, no scripts).

The gallery of worst errors and the embedding map need the model and the images; everything else
comes from the run's files.  Grad-CAM overlays and the map's points are cached (by model and image
content), so a report whose overlays and map are cached loads no model at all: no scikit-learn,
no torch.  When images are gone or Grad-CAM cannot run, the report says so in place and is still
written.  A text run's gallery shows the texts (from manifest.csv) instead of photos, their words
coloured by occlusion instead of Grad-CAM (see :mod:`headstart.report.texts`).
"""

from __future__ import annotations

import hashlib
import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from headstart.cache import CacheRoot
from headstart.data import Task, load_rgb
from headstart.errors import BackboneError, ConfigError, HeadstartError
from headstart.explain import Explanation, explain_many
from headstart.explain.linear import linear_path
from headstart.fsutil import atomic_write_text, read_entry, write_entry
from headstart.report import plots
from headstart.report.card import card_section
from headstart.report.leaderboard import leaderboard_section
from headstart.report.maps import MAP_METHODS, MAX_MAP_POINTS, TSNE_MAX_POINTS, map_section
from headstart.report.run import RunFiles, read_run
from headstart.report.sections import curves_section, data_section, metrics_section, task_title
from headstart.report.template import Section, note, page
from headstart.report.texts import text_gallery

if TYPE_CHECKING:
    from headstart.model import Model

__all__ = ["MAP_METHODS", "MAX_MAP_POINTS", "TSNE_MAX_POINTS", "build_report"]


class _ModelOnDemand:
    """The run's model, loaded on the first call and kept for the whole report; None when the
    bundle is unreadable.  Cached overlays and maps need no model: loading it imports
    scikit-learn and checks the bundle's digests, which costs more than the rest of a report."""

    def __init__(self, run: RunFiles, cache: CacheRoot) -> None:
        self._run, self._cache = run, cache
        self._loaded = False
        self._model: Model | None = None

    def __call__(self) -> Model | None:
        if not self._loaded:
            from headstart.model import load  # the library's model: only when one is needed

            self._loaded = True
            try:
                self._model = load(self._run.run_dir / "model", cache=self._cache)
            except HeadstartError:
                self._model = None
        return self._model


def _overlay_key(info: dict[str, Any], task: Task, path: Path) -> str | None:
    """Cache key of one overlay: the model's backbone and head (as model.json records them,
    with the digests of its weights and head files: loading checks the files against those),
    the task, the image's bytes."""
    try:
        with path.open("rb") as fh:
            image_sha = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
    backbone = json.dumps(info.get("backbone"), sort_keys=True)
    files = json.dumps(info.get("files"), sort_keys=True)
    text = f"gradcam-thumb-v3:{task.name}:{backbone}:{files}:{image_sha}"
    return hashlib.sha256(text.encode()).hexdigest()


def _explain(model: Model, task: Task, paths: list[Path]) -> list[Explanation | HeadstartError]:
    if model.backbone_ref.is_fused:  # no single network to map: say so without loading torch
        reason = BackboneError(
            "Grad-CAM needs one network; this model fuses "
            + ", ".join(p.name for p in model.backbone_ref.parts)
        )
        return [reason for _ in paths]
    if linear_path(model, task):
        return explain_many(model, paths, task=task.name)  # onnxruntime: no torch
    # the torch path: import it first, so the one-thread limit below reaches its thread pool
    import torch  # noqa: F401
    from threadpoolctl import threadpool_limits

    # one thread: on the busy 2-core machine, torch's two OpenMP threads took 5.3 s for the
    # forward and backward passes of 6 images, one thread 0.7 s (measured)
    with threadpool_limits(1):
        return explain_many(model, paths, task=task.name)


def _overlays(
    run: RunFiles, model: _ModelOnDemand, task: Task, paths: list[Path], cache: CacheRoot
) -> list[str]:
    """Grad-CAM overlay ``<img>`` of each image's predicted class of ``task``, or a one-line
    reason it is missing.  Overlays are cached by model and image content, so refitting the
    same data or rebuilding a report runs no backward pass (and loads no model); the missing
    ones are computed in one batch."""
    folder = cache.overlays
    keys = [_overlay_key(run.info, task, p) for p in paths]
    out: dict[int, str] = {}
    for i, key in enumerate(keys):
        cached = read_entry(folder / f"{key}.txt") if key else None
        if cached is not None:
            out[i] = cached.decode("utf-8", errors="replace")
    todo = [i for i in range(len(paths)) if i not in out]
    if not todo:
        return [out[i] for i in range(len(paths))]
    loaded = model()
    if loaded is None:
        out.update((i, note("No Grad-CAM: the model bundle is unreadable.")) for i in todo)
        return [out[i] for i in range(len(paths))]
    try:
        explained = _explain(loaded, task, [paths[i] for i in todo])
    except ImportError as exc:  # grad-cam or torch missing from this installation
        out.update((i, note(f"Grad-CAM unavailable: {exc}")) for i in todo)
        return [out[i] for i in range(len(paths))]
    for i, result in zip(todo, explained, strict=True):
        if isinstance(result, HeadstartError):
            out[i] = note(f"Grad-CAM failed: {result}")
            continue
        out[i] = f'<img src="{plots.image_uri(result.overlay)}" alt="Grad-CAM overlay">'
        key = keys[i]
        if key:
            write_entry(folder / f"{key}.txt", out[i].encode())
    return [out[i] for i in range(len(paths))]


def _thumbnail(path: Path) -> str | None:
    try:
        return f'<img src="{plots.image_uri(load_rgb(path, draft_size=320))}" alt="image">'
    except (HeadstartError, OSError):
        return None


def gallery_section(run: RunFiles, n: int, model: _ModelOnDemand, cache: CacheRoot) -> Section:
    """Each task's ``n`` most confident wrong answers with their images and Grad-CAM overlays
    (a text run: with their texts)."""
    title = "4. Worst errors"
    if not run.predictions:
        return Section("errors", title, note("No predictions.csv in the run: no error gallery."))
    if run.modality == "text":  # never open a text's path (a CSV row) as an image
        parts = [text_gallery(run, task, n, model, cache) for task in run.tasks]
    else:
        parts = [_task_gallery(run, task, n, model, cache) for task in run.tasks]
    return Section("errors", title, "\n".join(parts))


def _task_gallery(
    run: RunFiles, task: Task, n: int, model: _ModelOnDemand, cache: CacheRoot
) -> str:
    heading = f"<h3>{escape(task_title(run, task))}</h3>" if len(run.tasks) > 1 else ""
    worst = run.worst_errors(task, n)
    if not worst:
        return heading + note("No held-out image was answered wrongly.")
    cols = run.columns(task)
    paths = [run.image_path(row["path"]) for row in worst]
    thumbs = [_thumbnail(p) if p.is_file() else None for p in paths]
    readable = [p for p, t in zip(paths, thumbs, strict=True) if t is not None]
    cams = dict(zip(readable, _overlays(run, model, task, readable, cache), strict=True))
    cards = []
    for row, path, thumb in zip(worst, paths, thumbs, strict=True):
        predicted = row[cols["predicted"]] or "(none)"
        head = (
            f"<div><b>true</b> {escape(row[cols['label']] or '(none)')} · <b>predicted</b> "
            f"{escape(predicted)} · {float(row[cols['confidence']]):.0%} "
            f"({escape(row['split'])})</div>"
        )
        if thumb is None:
            why = "no longer on disk" if not path.is_file() else "unreadable"
            pics = note(f"Image {why}: {path}")
        else:
            pics = f'<div class="pics">{thumb}{cams[path]}</div>'
            pics += '<div class="path">photo · Grad-CAM for the most probable class</div>'
        cards.append(
            f'<div class="err">{head}{pics}<div class="path">{escape(row["path"])}</div></div>'
        )
    missing = sum(t is None for t in thumbs)
    intro = note(
        f"The {len(worst)} most confident wrong answers on the held-out splits; beside each "
        "photo, the Grad-CAM overlay shows where the model looked for the class it rated most "
        "probable."
        + (f" {missing} image(s) could not be shown: the data moved or changed." if missing else "")
    )
    return f'{heading}{intro}<div class="gallery">{"".join(cards)}</div>'


def build_report(
    run_dir: Path,
    *,
    output: Path | None = None,
    explain_errors: int = 6,
    embedding_map: str = "pca",
) -> Path:
    """Write ``run_dir/report.html`` (or ``output``): one self-contained page about the run.

    Sections: data, training curves, metrics with intervals, the ``explain_errors`` worst errors
    with Grad-CAM (a text run: with their texts; its data section shows texts of each class),
    an embedding map (``"pca"``, or ``"tsne"``: slower, keeps neighbourhoods)
    and a model card.  Returns the path written (atomically).
    """
    if embedding_map not in MAP_METHODS:
        raise ConfigError(
            f"unknown embedding map '{embedding_map}'; known: {', '.join(MAP_METHODS)}"
        )
    if explain_errors < 0:
        raise ConfigError(f"explain_errors must be >= 0, got {explain_errors}")
    run = read_run(Path(run_dir))
    config = (yaml.safe_load(run.config_text) if run.config_text else None) or {}
    cache = CacheRoot.from_config_dict(config)
    model = _ModelOnDemand(run, cache)
    board = leaderboard_section(run)
    sections = [
        data_section(run),
        curves_section(run),
        metrics_section(run),
        *([board] if board is not None else []),
        gallery_section(run, explain_errors, model, cache),
        map_section(run, config, model, cache, embedding_map),
        card_section(run),
    ]
    bb = run.info.get("backbone", {}).get("name", "?")
    if run.info.get("backbone", {}).get("parts"):
        bb = f"{bb.replace('+', ' + ')} (fused)"
    head = run.info.get("head", {}).get("kind", "?")
    what = (
        f"{len(run.tasks)} tasks"
        if len(run.tasks) > 1
        else f"{len(run.tasks[0].classes)} {'labels' if run.tasks[0].multi_label else 'classes'}"
    )
    subtitle = f"{bb} · {head} head · {what} · created {run.info.get('created', '?')}"
    html = page(f"headstart report: {run.run_dir.resolve().name}", subtitle, sections)
    target = Path(output) if output is not None else run.run_dir / "report.html"
    atomic_write_text(target, html)
    return target
