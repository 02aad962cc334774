"""Test-time augmentation (TTA): predict on several views of each image and average.

Modes (``--tta``): ``none`` (the centre crop, today's path), ``flip`` (centre crop + its
horizontal mirror), ``crops`` (torchvision ``FiveCrop``: four corners + centre of the resized
image) and ``flip+crops`` (those five and their mirrors, ten views).  Every view follows the
model's own :class:`~headstart.backbones.Preprocessing` (resize rule, interpolation, crop size,
mean/std), so TTA works for any backbone and for fine-tuned bundles alike.

The prediction is the mean of the per-view *class probabilities*, not of the embeddings: the head
(kNN, MLP, ensembles) was fitted on single-view embeddings and is non-linear, so a mean embedding
can sit where no training embedding lies, while each single view is in the distribution the head
knows; the mean of probabilities is still a distribution (rows sum to 1), and it is the classic
ten-crop rule.  A stored temperature is applied to each view before averaging, because it was
fitted on single-view probabilities.

Cache: the centre view *is* the plain embedding, read from (or written to) the usual store entry.
The other views are cached too, each under its own key (the plain model key + the view name, see
:func:`view_key`), so they can never collide with centre-crop entries and a second evaluation
with the same TTA costs no inference.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.backbones.preprocessing import INTERPOLATIONS, Preprocessing
from headstart.backbones.registry import BackboneRef
from headstart.data.images import decode_each
from headstart.errors import ConfigError
from headstart.features.extract import extract, feature_runner, hash_files, resolve_engine
from headstart.features.onnx_engine import physical_cores
from headstart.features.progress import ExtractProgress
from headstart.features.store import EmbeddingStore, model_key

__all__ = [
    "TTA_MODES",
    "View",
    "check_tta",
    "decode_views",
    "tta_proba",
    "tta_views",
    "view_arrays",
    "view_embeddings",
    "view_key",
]

TTA_MODES = ("none", "flip", "crops", "flip+crops")
_CORNERS = ("centre", "top_left", "top_right", "bottom_left", "bottom_right")
_VIEW_FORMAT = 1  # bump when the view geometry changes: it keys the cache


@dataclass(frozen=True)
class View:
    """One view: a crop position of the resized image, optionally mirrored left-right."""

    corner: str
    flip: bool = False

    @property
    def name(self) -> str:
        return self.corner + ("_flip" if self.flip else "")


CENTRE = View("centre")


def check_tta(tta: str) -> str:
    """``tta`` if it names a mode, else ``ConfigError`` listing the modes."""
    if tta not in TTA_MODES:
        raise ConfigError(f"unknown tta '{tta}'; known: {', '.join(TTA_MODES)}")
    return tta


def tta_views(tta: str) -> tuple[View, ...]:
    """The views of a mode; the first is always the plain centre crop."""
    corners = _CORNERS if check_tta(tta) in ("crops", "flip+crops") else _CORNERS[:1]
    views = [View(c) for c in corners]
    if tta in ("flip", "flip+crops"):
        views += [View(c, flip=True) for c in corners]
    return tuple(views)


def _box(corner: str, width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    if corner == "centre":  # the rule of Preprocessing.__call__ and torchvision's center_crop
        top, left = round((height - crop) / 2.0), round((width - crop) / 2.0)
    else:  # torchvision five_crop
        top = 0 if corner.startswith("top") else height - crop
        left = 0 if corner.endswith("left") else width - crop
    return left, top, left + crop, top + crop


def view_arrays(image: Image.Image, prep: Preprocessing, views: Sequence[View]) -> np.ndarray:
    """The normalised float32 arrays (V, 3, crop, crop) of ``views`` of one image.  The centre
    view is bit-identical to ``prep(image)``."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    size = prep.resized_size(*image.size)
    if size != image.size:
        image = image.resize(size, INTERPOLATIONS[prep.interpolation])
    # With resize == crop, prep leaves a crop x crop patch as it is and only normalises it:
    # the exact arithmetic of the plain path, without a copy of it here.
    normalise = replace(prep, resize=prep.crop)
    out = np.empty((len(views), 3, prep.crop, prep.crop), dtype=np.float32)
    for k, view in enumerate(views):
        patch = image.crop(_box(view.corner, *image.size, prep.crop))
        if view.flip:
            patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[k] = normalise(patch)
    return out


def decode_views(
    paths: Sequence[Path], prep: Preprocessing, views: Sequence[View]
) -> tuple[list[int], np.ndarray, dict[int, str]]:
    """Decode each file once (as the plain path does) and cut its views: kept indices,
    (n_kept, V, 3, crop, crop) float32, and {index: reason} for files that cannot be read."""
    shape = (len(views), 3, prep.crop, prep.crop)
    return decode_each(paths, lambda image: view_arrays(image, prep, views), shape, prep.resize)


def view_key(key: str, view: View) -> str:
    """The store key of a non-centre view's embeddings under the plain model ``key``."""
    text = f"{key}|tta-view={view.name}|format={_VIEW_FORMAT}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def view_embeddings(
    paths: Sequence[Path],
    ref: BackboneRef,
    tta: str,
    *,
    store: EmbeddingStore,
    engine: str = "auto",
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[np.ndarray, dict[int, str]]:
    """Embeddings (V, N, D) of the views of ``tta`` (order of :func:`tta_views`; NaN rows for
    unreadable files) and {index: reason}.  View 0 is exactly :func:`extract`'s output.  A
    fused backbone's are each part's views (its own preprocessing and cache) side by side."""
    if ref.is_fused:
        parts = [
            view_embeddings(
                paths, part, tta, store=store, engine=engine, batch_size=batch_size,
                progress=progress,
            )
            for part in ref.parts
        ]  # fmt: skip
        # a file any part cannot read fails the fusion (the first part's reason is kept)
        lost = {i: why for _, failed in reversed(parts) for i, why in failed.items()}
        joined = np.concatenate([embeddings for embeddings, _ in parts], axis=2)
        joined[:, sorted(lost)] = np.nan
        return joined, dict(sorted(lost.items()))
    views = tta_views(tta)
    engine = resolve_engine(engine)
    paths = [Path(p) for p in paths]
    failures: dict[int, str] = {}
    shas = hash_files(paths, failures)  # once, for the plain pass and the other views
    readable = [i for i in range(len(paths)) if i not in failures]
    plain = extract(
        [paths[i] for i in readable],
        [shas[i] for i in readable],
        ref,
        store=store,
        engine=engine,
        progress=progress,
    )
    failures.update((readable[j], reason) for j, reason in plain.failures.items())
    out = np.full((len(views), len(paths), plain.features.shape[1]), np.nan, dtype=np.float32)
    out[0, readable] = plain.features
    ok = [i for i in range(len(paths)) if i not in failures]
    if len(views) > 1 and ok:
        extra = _Extra(ref, views[1:], store, engine, batch_size, progress)
        extra.fill(paths, {i: shas[i] for i in ok}, out[1:], failures)
    out[:, sorted(failures)] = np.nan
    return out, dict(sorted(failures.items()))


def tta_proba(
    paths: Sequence[Path],
    ref: BackboneRef,
    class_proba: Callable[[np.ndarray], np.ndarray],
    n_columns: int,
    tta: str,
    *,
    store: EmbeddingStore,
    progress: bool = False,
) -> tuple[np.ndarray, dict[int, str]]:
    """The mean over views of ``class_proba`` (embeddings -> (N, ``n_columns``) calibrated
    probabilities), with NaN rows for unreadable files, and {index: reason}."""
    embeddings, failures = view_embeddings(paths, ref, tta, store=store, progress=progress)
    proba = np.full((len(paths), n_columns), np.nan, dtype=np.float64)
    ok = np.array([i not in failures for i in range(len(paths))], dtype=bool)
    if ok.any():
        proba[ok] = np.mean([class_proba(view[ok]) for view in embeddings], axis=0)
    return proba, failures


@dataclass
class _Extra:
    """Embeds the non-centre views, through the store; one decode per file for all views."""

    ref: BackboneRef
    views: Sequence[View]
    store: EmbeddingStore
    engine: str
    batch_size: int
    progress: bool

    def fill(
        self, paths: list[Path], shas: dict[int, str], out: np.ndarray, failures: dict[int, str]
    ) -> None:
        """Embeddings of the files ``shas`` maps (index -> sha256) into ``out`` (V-1, N, D)."""
        base = model_key(self.ref, self.engine)
        keys = [view_key(base, view) for view in self.views]
        todo: dict[str, list[int]] = {}  # sha -> indices still missing a view
        per_view = [self.store.get_many(key, list(shas.values())) for key in keys]
        for j, (i, sha) in enumerate(shas.items()):
            cached = [found[j] for found in per_view]
            if any(vec is None for vec in cached):
                todo.setdefault(sha, []).append(i)
                continue
            for k, vec in enumerate(cached):
                out[k, i] = vec
        if todo:
            self._compute(paths, todo, keys, out, failures)

    def _compute(
        self,
        paths: list[Path],
        todo: dict[str, list[int]],
        keys: list[str],
        out: np.ndarray,
        failures: dict[int, str],
    ) -> None:
        for key, view in zip(keys, self.views, strict=True):
            self.store.write_info(key, {"backbone": self.ref.name, "tta_view": view.name})
        shas = list(todo)
        files = [paths[todo[sha][0]] for sha in shas]
        per_batch = max(1, self.batch_size // len(self.views))
        workers = physical_cores()
        label = f"{self.ref.name} ({len(self.views)} more views)"
        with (
            ThreadPoolExecutor(workers, thread_name_prefix="headstart-tta") as pool,
            ExtractProgress(len(files), label, self.progress) as bar,
            ExitStack() as stack,
        ):
            writers = [stack.enter_context(self.store.writer(key)) for key in keys]
            batches = self._decoded(files, per_batch, pool, workers + 1)
            runner = feature_runner(self.ref, self.store, self.engine)
            size = self.ref.preprocessing.crop
            for start, kept, arrays, failed in batches:
                for j, reason in failed.items():  # the file changed since the plain pass
                    failures.update({i: reason for i in todo[shas[start + j]]})
                bar.advance(len(kept) + len(failed))
                if not kept:
                    continue
                feats = runner(arrays.reshape(-1, 3, size, size))
                feats = feats.reshape(len(kept), len(self.views), -1)
                for row, j in enumerate(kept):
                    sha = shas[start + j]
                    for k, writer in enumerate(writers):
                        writer.add(sha, feats[row, k])
                        out[k, todo[sha]] = feats[row, k]

    def _decoded(
        self, files: list[Path], per_batch: int, pool: ThreadPoolExecutor, depth: int
    ) -> Iterator[tuple[int, list[int], np.ndarray, dict[int, str]]]:
        """(first file index, kept, views, failed) per batch, in order, ``depth`` ahead at most
        (ten views of a batch are ~20 MB; decoding everything first would not bound memory)."""
        prep = self.ref.preprocessing
        pending: deque[tuple[int, Future[tuple[list[int], np.ndarray, dict[int, str]]]]] = deque()
        for start in range(0, len(files), per_batch):
            chunk = files[start : start + per_batch]
            pending.append((start, pool.submit(decode_views, chunk, prep, self.views)))
            if len(pending) >= depth:
                first, future = pending.popleft()
                yield (first, *future.result())
        while pending:
            first, future = pending.popleft()
            yield (first, *future.result())
