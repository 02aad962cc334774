"""Scanned data with one embedding per usable image: the primitive every probe, study and the
pipeline start from.

:func:`scan_data` scans with the config's split rules; :func:`embed_data` embeds every usable
image with the configured backbone through the cache (files that fail to decode become problems
of the manifest); :class:`EmbeddedData` keeps the manifest and the features row for row.
:func:`embed_unlabelled` embeds images without labels (a folder, or a CSV of paths) through the
same cache: ``fit --unlabelled`` and ``explore`` of an unlabelled folder read them with it.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence, Set
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from headstart.backbones import BackboneRef, resolve_backbone
from headstart.cache import CacheRoot
from headstart.config import BackboneConfig, FitConfig, load_config
from headstart.data import Manifest, Task, scan
from headstart.data.walk import walk
from headstart.errors import ConfigError, DataError, PathNotFoundError
from headstart.features import EmbeddingStore, Extraction, extract
from headstart.features.extract import hash_files
from headstart.features.int8 import quantize_ref
from headstart.features.store import model_key

__all__ = [
    "TEXT_DEFAULT",
    "EmbeddedData",
    "Unlabelled",
    "UnlabelledFiles",
    "check_modality",
    "check_pretrained",
    "check_trainable",
    "embed_data",
    "embed_unlabelled",
    "find_unlabelled",
    "for_data",
    "scan_data",
]

#: The backbone text data gets when the config names none (the image default stands).
TEXT_DEFAULT = "minilm-l6"
_IMAGE_DEFAULT = BackboneConfig.model_fields["name"].default


@dataclass
class EmbeddedData:
    """A scanned data set with one embedding per usable sample (rows follow manifest.samples)."""

    manifest: Manifest
    features: np.ndarray
    backbone: BackboneRef
    extraction: Extraction

    def rows(self, split: str) -> list[int]:
        """Row indices of one split."""
        return self.manifest.rows(split)

    def cells(self, task: Task, split: str) -> list[tuple[str, ...]]:
        """Each sample's labels of ``task`` in one split."""
        return [tuple(s.labels[task.name]) for s in self.manifest.split(split)]

    def subset(self, rows: list[int], manifest: Manifest) -> EmbeddedData:
        """The data restricted to ``rows`` (of this manifest), with ``manifest`` describing them."""
        return replace(self, manifest=manifest, features=self.features[rows])


def scan_data(data: str | Path, config: FitConfig, *, carve_val: bool = True) -> Manifest:
    """Scan ``data`` with the config's split rules, seed, pixel limit and label column.
    ``carve_val=False``: no val split is carved where the data has none (the probe validates
    by cross-validation; only fine-tuning needs one); the test split is the same either way."""
    d = config.data
    return scan(
        data,
        val_fraction=d.val_fraction if carve_val else 0.0,
        test_fraction=d.test_fraction,
        seed=d.seed,
        max_pixels=d.max_pixels,
        label_column=d.label_column,
        text_column=d.text_column,
    )


def for_data(cfg: FitConfig, manifest: Manifest | None = None) -> FitConfig:
    """``cfg`` with a backbone for the data's modality: text data (``manifest`` is text, or
    the config names a text column) left on the image default backbone gets
    :data:`TEXT_DEFAULT` (with a ``--weights`` folder: that encoder folder); anything else is
    returned as it is (a weights file is an image backbone's)."""
    text = manifest.modality == "text" if manifest is not None else bool(cfg.data.text_column)
    b = cfg.backbone
    image_weights = b.weights is not None and not Path(b.weights).expanduser().is_dir()
    if not text or b.name != _IMAGE_DEFAULT or image_weights:
        return cfg
    return cfg.model_copy(update={"backbone": b.model_copy(update={"name": TEXT_DEFAULT})})


def check_modality(ref: BackboneRef, manifest: Manifest) -> None:
    """A one-line :class:`ConfigError` when the backbone embeds images and the data is text,
    or the other way round."""
    if ref.modality == manifest.modality:
        return
    hint = (
        f"use a text encoder ({TEXT_DEFAULT}, mpnet-base, hf:NAME)"
        if manifest.modality == "text"
        else "use an image backbone (see `headstart backbones`)"
    )
    where = manifest.source or manifest.root
    raise ConfigError(
        f"backbone '{ref.name}' embeds {ref.modality}s but {where} holds "
        f"{manifest.modality}s: {hint}"
    )


def check_trainable(manifest: Manifest) -> None:
    """Every class of every task must keep a training image (after unreadable files and
    deduplication removed some); otherwise a one-line :class:`DataError` names it."""
    for task in manifest.targets:
        counts = Counter(x for s in manifest.split("train") for x in s.labels[task.name])
        empty = [c for c in task.classes if counts[c] == 0]
        if empty:
            where = "" if len(manifest.targets) == 1 else f" of '{task.name}'"
            raise DataError(
                f"class {', '.join(repr(c) for c in empty)}{where} has no usable training "
                "image; add images or remove the class"
            )


def check_pretrained(config: FitConfig) -> None:
    """Embeddings need pretrained weights: a one-line error for ``backbone.pretrained=false``."""
    if not config.backbone.pretrained:
        raise ConfigError(
            "backbone.pretrained=false: a randomly initialised backbone gives meaningless "
            "embeddings; train it from scratch with --strategy finetune"
        )


def embed_data(
    data: str | Path | Manifest,
    config: FitConfig | None = None,
    *,
    progress: bool = True,
    ref: BackboneRef | None = None,
) -> EmbeddedData:
    """Scan ``data`` (unless it is a scanned manifest) and embed every usable image with the
    configured backbone, cached under the config's cache root.  Files that fail to decode
    become problems of the manifest; every class must keep a training image.  With
    ``extract.precision=int8`` the backbone is first quantized to static int8, calibrated on
    the training split (cached), and ``.backbone`` carries the int8 model."""
    cfg = config or load_config()
    check_pretrained(cfg)
    manifest = data if isinstance(data, Manifest) else scan_data(data, cfg)
    cfg = for_data(cfg, manifest)
    ref = ref or resolve_backbone(cfg.backbone.name, cfg.backbone.weights)
    check_modality(ref, manifest)
    store = CacheRoot.for_config(cfg).store
    if manifest.modality == "text":
        return _embed_texts(manifest, cfg, ref, store, progress)
    if cfg.extract.precision == "int8" and ref.precision != "int8":
        # calibrated on the training split only: the test images stay unseen
        ref = quantize_ref(ref, [s.path for s in manifest.split("train")], store)
    extraction = extract(
        [s.path for s in manifest.samples],
        [s.sha256 for s in manifest.samples],
        ref,
        store=store,
        engine=cfg.extract.engine,
        batch_size=cfg.extract.batch_size,
        workers=cfg.extract.workers,
        progress=progress,
        executor=cfg.extract.executor,
        address=cfg.extract.address,
    )
    keep = [i for i in range(len(manifest.samples)) if i not in extraction.failures]
    if extraction.failures:
        reasons = {manifest.samples[i].path: r for i, r in extraction.failures.items()}
        manifest = manifest.without(reasons, reasons)
    check_trainable(manifest)
    return EmbeddedData(manifest, extraction.features[keep], ref, extraction)


def _embed_texts(
    manifest: Manifest, cfg: FitConfig, ref: BackboneRef, store: EmbeddingStore, progress: bool
) -> EmbeddedData:
    if cfg.extract.precision == "int8":
        raise ConfigError(
            "extract.precision=int8 quantizes image backbones; text encoders run in float32"
        )
    if cfg.extract.executor == "ray":
        raise ConfigError("--engine ray embeds images; text data is embedded with --engine local")
    # the text engine loads tokenizers and ONNX Runtime only when text is embedded
    from headstart.features.text_engine import extract_texts

    extraction = extract_texts(
        manifest.texts,
        [s.sha256 for s in manifest.samples],
        ref,
        store=store,
        batch_size=max(cfg.extract.batch_size, 64),
        progress=progress,
    )
    check_trainable(manifest)
    return EmbeddedData(manifest, extraction.features, ref, extraction)


@dataclass(frozen=True)
class Unlabelled:
    """Embedded images without labels: the usable ones row for row, and what was left out."""

    source: Path
    paths: list[Path]
    shas: list[str]
    features: np.ndarray
    unusable: int = 0
    """Files that could not be read, decoded or followed."""
    known: int = 0
    """Images left out because their bytes are already among the labelled ones."""
    repeats: int = 0
    """Exact copies of an image already kept."""
    extraction: Extraction | None = None
    """How the kept images were embedded (cached, computed, the time taken)."""


@dataclass(frozen=True)
class UnlabelledFiles:
    """The images of an unlabelled source, hashed, before any embedding: the usable ones and
    what was left out (the counts of :class:`Unlabelled`)."""

    source: Path
    paths: list[Path]
    shas: list[str]
    unusable: int = 0
    known: int = 0
    repeats: int = 0

    def none_usable(self) -> DataError:
        """The one-line error for a source with nothing usable left."""
        found = f"{len(self.paths) + self.unusable + self.known + self.repeats} image file(s)"
        if self.known:
            found += f", {self.known} of them labelled"
        return DataError(f"no usable unlabelled image in '{self.source}' ({found})")


def find_unlabelled(
    source: str | Path, *, known: Set[str] = frozenset(), unique: bool = True
) -> UnlabelledFiles:
    """The images under the folder ``source`` (the scan's walk: same image names, hidden names
    and symlink policy), or listed in the ``path`` column of the CSV ``source`` (relative to
    it), with their sha256.  Images whose sha256 is in ``known`` (the labelled data's) and,
    with ``unique``, exact repeats are left out and counted; a one-line :class:`DataError`
    when no usable image is left.  The one reader of ``--unlabelled`` (fit, distill, embed,
    explore)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise PathNotFoundError(f"unlabelled images: no such file or folder: '{path}'")
    if path.is_dir():
        tree, problems = walk(path.resolve())
        paths, unusable = tree.all_images(), len(problems)
    elif path.suffix.lower() == ".csv":
        paths, unusable = _csv_paths(path), 0
    else:
        raise DataError(
            f"unlabelled images must be a folder or a CSV with a 'path' column, not '{path}'"
        )
    failures: dict[int, str] = {}
    shas = hash_files(paths, failures)
    seen: set[str] = set()
    rows, in_data, repeats = [], 0, 0
    for i, sha in enumerate(shas):
        if i in failures:
            continue
        if sha in known:
            in_data += 1
        elif unique and sha in seen:
            repeats += 1
        else:
            seen.add(sha)
            rows.append(i)
    found = UnlabelledFiles(
        path,
        [paths[i] for i in rows],
        [shas[i] for i in rows],
        unusable + len(failures),
        in_data,
        repeats,
    )
    if not rows:
        raise found.none_usable()
    return found


def embed_unlabelled(
    source: str | Path,
    config: FitConfig,
    *,
    ref: BackboneRef | None = None,
    progress: bool = True,
    known: Set[str] = frozenset(),
    unique: bool = True,
) -> Unlabelled:
    """Embed the images :func:`find_unlabelled` finds in ``source`` (less ``known``, and
    with ``unique`` less repeats) with the configured backbone through the cache; images
    that fail to decode are counted as unusable."""
    check_pretrained(config)
    files = find_unlabelled(source, known=known, unique=unique)
    extraction = extract(
        files.paths,
        files.shas,
        ref or resolve_backbone(config.backbone.name, config.backbone.weights),
        store=CacheRoot.for_config(config).store,
        engine=config.extract.engine,
        batch_size=config.extract.batch_size,
        workers=config.extract.workers,
        progress=progress,
        executor=config.extract.executor,
        address=config.extract.address,
    )
    keep = [j for j in range(len(files.paths)) if j not in extraction.failures]
    kept = replace(
        files,
        paths=[files.paths[j] for j in keep],
        shas=[files.shas[j] for j in keep],
        unusable=files.unusable + len(extraction.failures),
    )
    if not keep:
        raise kept.none_usable()
    return Unlabelled(
        kept.source,
        kept.paths,
        kept.shas,
        extraction.features[keep],
        kept.unusable,
        kept.known,
        kept.repeats,
        extraction,
    )


def nearest_images(
    query: str | Path,
    paths: Sequence[Path],
    shas: Sequence[str],
    config: FitConfig,
    *,
    k: int = 5,
    ref: BackboneRef | None = None,
) -> list[tuple[Path, float]]:
    """The ``k`` images among ``paths`` (already embedded; ``shas`` their sha256) nearest the
    image ``query`` by cosine distance, asked of the embedding store: (path, distance),
    nearest first.  The query is embedded through the cache too."""
    source = Path(query).expanduser()
    if not source.is_file():
        raise PathNotFoundError(f"--like: no such image: '{source}'")
    ref = ref or resolve_backbone(config.backbone.name, config.backbone.weights)
    store = CacheRoot.for_config(config).store
    found = extract([source], None, ref, store=store, engine=config.extract.engine, progress=False)
    if found.failures:
        raise DataError(f"--like: cannot read '{source}': {found.failures[0]}")
    by_sha: dict[str, Path] = {}
    for path, sha in zip(paths, shas, strict=True):
        by_sha.setdefault(sha, path)
    key = model_key(ref, found.engine)
    near, distances = store.nearest(key, found.features, k, among=list(by_sha))
    return [(by_sha[sha], float(d)) for sha, d in zip(near[0], distances[0], strict=False)]


def _csv_paths(csv_path: Path) -> list[Path]:
    """The ``path`` column of a CSV (relative to it); other columns are ignored."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "path" not in columns:
                raise DataError(
                    f"{csv_path.name} has no 'path' column; found: "
                    f"{', '.join(repr(c) for c in columns) or 'no header'}"
                )
            reader.fieldnames = columns
            cells = [(row.get("path") or "").strip() for row in reader]
    except OSError as exc:
        raise DataError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"{csv_path.name} is not UTF-8 text; save it as UTF-8 CSV") from None
    paths = [(csv_path.parent / cell).resolve() for cell in cells if cell]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DataError(f"{len(absent)} paths in {csv_path.name} do not exist, e.g. '{absent[0]}'")
    return paths
