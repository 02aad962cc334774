"""``build_report``: one self-contained HTML file from a run folder (images embedded, no scripts).

The gallery of worst errors and the embedding map need the model and the images; everything else
comes from the run's files.  When images are gone or Grad-CAM cannot run, the report says so in
place and is still written.
"""

from __future__ import annotations

import hashlib
import random
from html import escape
from pathlib import Path

import numpy as np
import yaml

from headstart.cache import CacheRoot
from headstart.data import Task, load_rgb
from headstart.errors import ConfigError, HeadstartError
from headstart.explain import explain_many
from headstart.features import extract
from headstart.fsutil import atomic_write_text
from headstart.model import Model, load
from headstart.report import plots
from headstart.report.card import card_section
from headstart.report.run import RunFiles, read_run
from headstart.report.sections import curves_section, data_section, metrics_section, task_title
from headstart.report.template import Section, figure, note, page

__all__ = ["MAP_METHODS", "MAX_MAP_POINTS", "TSNE_MAX_POINTS", "build_report"]

MAX_MAP_POINTS = 2000
"""At most this many images (a seeded random subsample) are drawn on the embedding map."""
TSNE_MAX_POINTS = 1000
"""With ``embedding_map="tsne"``, t-SNE up to this many points (7 s for 320 on a busy 2-core
machine, measured), PCA (instant) above it."""
MAP_METHODS = ("pca", "tsne")


def _load_model(run: RunFiles, cache: CacheRoot) -> Model | None:
    """The run's model, loaded once for the whole report; None when the bundle is unreadable."""
    try:
        return load(run.run_dir / "model", cache=cache)
    except HeadstartError:
        return None


def _overlay_key(model: Model, task: Task, path: Path) -> str | None:
    """Cache key of one overlay: the model's weights and head, the task, the image's bytes."""
    try:
        with path.open("rb") as fh:
            image_sha = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
    files = model.info.get("files", {})
    parts = [model.backbone_ref.weights_sha256, str(files.get("head.safetensors")), image_sha]
    text = f"gradcam-thumb-v2:{task.name}:{':'.join(parts)}"
    return hashlib.sha256(text.encode()).hexdigest()


def _overlays(model: Model | None, task: Task, paths: list[Path], cache: CacheRoot) -> list[str]:
    """Grad-CAM overlay ``<img>`` of each image's predicted class of ``task``, or a one-line
    reason it is missing.  Overlays are cached by model and image content, so refitting the
    same data or rebuilding a report runs no backward pass."""
    if model is None:
        return [note("No Grad-CAM: the model bundle is unreadable.")] * len(paths)
    folder = cache.overlays
    keys = [_overlay_key(model, task, p) for p in paths]
    cached = {
        i: (folder / f"{k}.txt").read_text()
        for i, k in enumerate(keys)
        if k and (folder / f"{k}.txt").is_file()
    }
    todo = [i for i in range(len(paths)) if i not in cached]
    out = dict(cached)
    if todo:
        try:
            explained = explain_many(model, [paths[i] for i in todo], task=task.name)
        except ImportError as exc:  # grad-cam or torch missing from this installation
            return [note(f"Grad-CAM unavailable: {exc}")] * len(paths)
        for i, result in zip(todo, explained, strict=True):
            if isinstance(result, HeadstartError):
                out[i] = note(f"Grad-CAM failed: {result}")
                continue
            out[i] = f'<img src="{plots.image_uri(result.overlay)}" alt="Grad-CAM overlay">'
            key = keys[i]
            if key:
                atomic_write_text(folder / f"{key}.txt", out[i])
    return [out[i] for i in range(len(paths))]


def _thumbnail(path: Path) -> str | None:
    try:
        return f'<img src="{plots.image_uri(load_rgb(path, draft_size=320))}" alt="image">'
    except (HeadstartError, OSError):
        return None


def gallery_section(run: RunFiles, n: int, model: Model | None, cache: CacheRoot) -> Section:
    """Each task's ``n`` most confident wrong answers with their images and Grad-CAM overlays."""
    title = "4. Worst errors"
    if not run.predictions:
        return Section("errors", title, note("No predictions.csv in the run: no error gallery."))
    parts = [_task_gallery(run, task, n, model, cache) for task in run.tasks]
    return Section("errors", title, "\n".join(parts))


def _task_gallery(run: RunFiles, task: Task, n: int, model: Model | None, cache: CacheRoot) -> str:
    heading = f"<h3>{escape(task_title(run, task))}</h3>" if len(run.tasks) > 1 else ""
    worst = run.worst_errors(task, n)
    if not worst:
        return heading + note("No held-out image was answered wrongly.")
    cols = run.columns(task)
    paths = [run.image_path(row["path"]) for row in worst]
    thumbs = [_thumbnail(p) if p.is_file() else None for p in paths]
    readable = [p for p, t in zip(paths, thumbs, strict=True) if t is not None]
    cams = dict(zip(readable, _overlays(model, task, readable, cache), strict=True))
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


def _embedding_rows(run: RunFiles, max_points: int) -> list[dict[str, str]]:
    rows = [r for r in run.manifest if r.get("sha256")]
    if len(rows) > max_points:
        rows = sorted(random.Random(0).sample(rows, max_points), key=rows.index)
    return rows


def _reduce(features: np.ndarray, method: str) -> tuple[np.ndarray, str]:
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    n = len(features)
    if n < 3:
        return np.zeros((n, 2)), "too few points"
    # one thread: on a busy small machine, BLAS/OpenMP thread pools made this 10x slower (measured)
    with threadpool_limits(1):
        if method == "pca" or n > TSNE_MAX_POINTS:
            return PCA(n_components=2, svd_solver="randomized", random_state=0).fit_transform(
                features
            ), "PCA"
        from sklearn.manifold import TSNE

        start = PCA(n_components=min(50, n - 1, features.shape[1])).fit_transform(features)
        perplexity = min(30.0, (n - 1) / 3)
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0)
        return np.asarray(tsne.fit_transform(start)), "t-SNE"


def map_section(
    run: RunFiles, model: Model | None, cache: CacheRoot, method: str = "pca"
) -> Section:
    """Embeddings from the cache, reduced to 2-D, coloured by the first task's label."""
    title = "5. Embedding map"
    if model is None:
        return Section("map", title, note("Model bundle unreadable: no embedding map."))
    cfg = yaml.safe_load(run.config_text) if run.config_text else {}
    ext = (cfg or {}).get("extract", {}) or {}
    rows = _embedding_rows(run, MAX_MAP_POINTS)
    result = extract(
        [run.image_path(r["path"]) for r in rows],
        [r["sha256"] for r in rows],
        model.backbone_ref,
        store=cache.store,
        engine=str(ext.get("engine", "auto")),
        progress=False,
    )
    keep = [i for i in range(len(rows)) if i not in result.failures]
    if len(keep) < 3:
        return Section("map", title, note("Embeddings unavailable (images gone, cache empty)."))
    points, method = _reduce(result.features[keep], method)
    task = run.tasks[0]
    labels = [rows[i].get(task.name, "").split("|")[0] for i in keep]
    splits = [rows[i]["split"] for i in keep]
    caption = (
        f"{len(keep)} images ({method} of the backbone's embeddings); dots: train, "
        "crosses: held out. Classes that overlap here are hard for any head on these features."
    )
    if len(run.tasks) > 1 or task.multi_label:
        caption += f" Colours: the (first) label of task '{task.name}'."
    if result.failures:
        caption += f" {len(result.failures)} image(s) could not be embedded and are not shown."
    uri = plots.embedding_map(points, labels, splits, task.classes, f"{method} of embeddings")
    return Section("map", title, figure(uri, "embedding map", caption))


def build_report(
    run_dir: Path,
    *,
    output: Path | None = None,
    explain_errors: int = 6,
    embedding_map: str = "pca",
) -> Path:
    """Write ``run_dir/report.html`` (or ``output``): one self-contained page about the run.

    Sections: data, training curves, metrics with intervals, the ``explain_errors`` worst errors
    with Grad-CAM, an embedding map (``"pca"``, or ``"tsne"``: slower, keeps neighbourhoods)
    and a model card.  Returns the path written (atomically).
    """
    if embedding_map not in MAP_METHODS:
        raise ConfigError(
            f"unknown embedding map '{embedding_map}'; known: {', '.join(MAP_METHODS)}"
        )
    if explain_errors < 0:
        raise ConfigError(f"explain_errors must be >= 0, got {explain_errors}")
    run = read_run(Path(run_dir))
    cache = CacheRoot.from_config_dict(yaml.safe_load(run.config_text) if run.config_text else {})
    model = _load_model(run, cache)
    sections = [
        data_section(run),
        curves_section(run),
        metrics_section(run),
        gallery_section(run, explain_errors, model, cache),
        map_section(run, model, cache, embedding_map),
        card_section(run),
    ]
    bb = run.info.get("backbone", {}).get("name", "?")
    head = run.info.get("head", {}).get("kind", "?")
    what = (
        f"{len(run.tasks)} tasks"
        if len(run.tasks) > 1
        else f"{len(run.tasks[0].classes)} {'labels' if run.tasks[0].multi_label else 'classes'}"
    )
    subtitle = f"{bb} + {head} head · {what} · created {run.info.get('created', '?')}"
    html = page(f"headstart report: {run.run_dir.resolve().name}", subtitle, sections)
    target = Path(output) if output is not None else run.run_dir / "report.html"
    atomic_write_text(target, html)
    return target
