"""Feature extraction with an on-disk cache: decode in parallel, infer with ONNX Runtime or torch.

Only files missing from the store are decoded; the backbone is built (and torch imported) only
when something is missing and no cached ONNX export exists.  A fully cached call reads the store
and nothing else.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import BackboneRef
from headstart.backbones.spec import file_sha256, require_single
from headstart.data.images import load_rgb, path_problem
from headstart.errors import BackboneError, ConfigError, ImageError
from headstart.features.onnx_engine import (
    OnnxFeatures,
    cached_export,
    export_onnx,
    onnxruntime_available,
    physical_cores,
)
from headstart.features.progress import ExtractProgress
from headstart.features.store import EmbeddingStore, model_key

__all__ = [
    "ENGINES",
    "Extraction",
    "Runner",
    "extract",
    "feature_runner",
    "hash_files",
    "int8_bytes",
    "resolve_engine",
]

ENGINES = ("auto", "onnx", "torch")
ORT_SPINNING = False  # measured: spinning threads starve the decode threads on 2 cores
DECODE_MODE = "thread"  # "thread" or "process"; see benchmarks/extract.py for the measurements
Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Extraction:
    """Features aligned with the input paths; rows of failed files are NaN.  A fused
    backbone's extraction keeps each part's in ``parts`` (in column order); its ``n_cached`` is
    the fewest files any part found cached, ``n_computed`` the most any part embedded."""

    features: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)
    n_cached: int = 0
    n_computed: int = 0
    seconds: float = 0.0
    engine: str = "onnx"
    parts: list[Extraction] = field(default_factory=list)
    keys: tuple[str, ...] = ()
    """The store tables the rows live in (a fusion: one per part, in column order)."""


def resolve_engine(engine: str) -> str:
    """``"auto"`` -> ``"onnx"`` when onnxruntime imports, else ``"torch"``; others checked."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine '{engine}'; known: {', '.join(ENGINES)}")
    if engine == "auto":
        return "onnx" if onnxruntime_available() else "torch"
    return engine


def _decode_batch(
    items: list[tuple[int, str]], prep: Preprocessing
) -> tuple[list[int], np.ndarray, dict[int, str]]:
    """Decode + preprocess one batch (runs in a worker): kept indices, stacked array, failures."""
    out = np.empty((len(items), 3, prep.crop, prep.crop), dtype=np.float32)
    kept: list[int] = []
    failed: dict[int, str] = {}
    for index, path in items:
        try:
            image = load_rgb(Path(path), draft_size=prep.resize)
        except ImageError as exc:
            failed[index] = str(exc)
            continue
        except OSError as exc:  # unreadable file (permissions, vanished): not cached
            failed[index] = f"unreadable: {exc.strerror or exc}"
            continue
        out[len(kept)] = prep(image)
        kept.append(index)
    return kept, out[: len(kept)], failed


def _executor(workers: int, mode: str) -> Executor:
    if mode == "process":
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
    return ThreadPoolExecutor(workers, thread_name_prefix="headstart-decode")


def _decoded_batches(
    items: list[tuple[int, str]], prep: Preprocessing, batch_size: int, pool: Executor, depth: int
) -> Iterator[tuple[list[int], np.ndarray, dict[int, str]]]:
    """Batches in order, with at most ``depth`` decoding ahead (bounds memory)."""
    chunks = (items[i : i + batch_size] for i in range(0, len(items), batch_size))
    pending: deque[Future[tuple[list[int], np.ndarray, dict[int, str]]]] = deque()
    for chunk in chunks:
        pending.append(pool.submit(_decode_batch, chunk, prep))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _onnx_runner(ref: BackboneRef, key: str, store: EmbeddingStore, threads: int) -> Runner:
    if ref.int8_path is not None:
        return OnnxFeatures(int8_bytes(ref), threads=threads, spinning=ORT_SPINNING)
    model = cached_export(store.onnx_path(key), lambda path: export_onnx(ref.build(), path))
    assert model is not None  # export_onnx returns its path or raises
    return OnnxFeatures(model, threads=threads, spinning=ORT_SPINNING)


def int8_bytes(ref: BackboneRef) -> bytes:
    """The bytes of ``ref``'s int8 model, checked against ``ref.int8_sha256`` (a missing or
    damaged file is a one-line ``BackboneError``: sessions run only what was checked)."""
    path = ref.int8_path
    if path is None:
        raise BackboneError(f"backbone '{ref.name}' has no int8 model")
    try:
        model = path.read_bytes()
    except OSError as exc:
        raise BackboneError(f"int8 model of '{ref.name}' cannot be read: {path}: {exc}") from None
    if hashlib.sha256(model).hexdigest() != ref.int8_sha256:
        raise BackboneError(
            f"int8 model {path} of '{ref.name}' does not match its sha256; quantize it again"
        )
    return model


def _checked_engine(ref: BackboneRef, engine: str) -> str:
    """``engine`` resolved; an int8 backbone runs only on ONNX Runtime (one-line error)."""
    if not any(p.int8_path for p in ref.members):
        return resolve_engine(engine)
    if engine == "torch":
        raise ConfigError(
            f"backbone '{ref.name}' is int8: it runs on ONNX Runtime only, not extract.engine=torch"
        )
    if resolve_engine(engine) != "onnx":
        raise ConfigError(f"backbone '{ref.name}' is int8: it needs onnxruntime installed")
    return "onnx"


def _torch_runner(ref: BackboneRef, threads: int) -> Runner:
    # lazy: torch takes seconds to import; only this path needs it
    import torch

    torch.set_num_threads(threads)
    backbone = ref.build().to(memory_format=torch.channels_last)

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return backbone(x).float().numpy()

    return run


def feature_runner(ref: BackboneRef, store: EmbeddingStore, engine: str = "auto") -> Runner:
    """A function from preprocessed batches (N, 3, H, W) float32 to (N, D) features, kept warm
    for repeated calls (prediction, serving).  The ONNX export is cached in ``store``.  One
    backbone only: a fused one takes images in several preprocessings, see
    :class:`~headstart.features.runners.ImageFeatures`."""
    require_single(ref, "a feature runner", "run each part (features.ImageFeatures does)")
    engine = _checked_engine(ref, engine)
    threads = physical_cores()
    if engine == "onnx":
        return _onnx_runner(ref, model_key(ref, engine), store, threads)
    return _torch_runner(ref, threads)


@dataclass
class _Plan:
    engine: str
    key: str
    store: EmbeddingStore
    batch_size: int
    workers: int
    mode: str
    progress: bool
    executor: str = "local"
    address: str | None = None
    actors: int | None = None  # --engine ray: ONNX Runtime actors (None: half the cluster)


def _compute(
    todo: dict[str, str], ref: BackboneRef, plan: _Plan
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Decode and embed the files ``todo`` (sha -> path); store every result as it comes."""
    items = list(enumerate(todo.values()))
    shas = list(todo)
    vectors: dict[str, np.ndarray] = {}
    failures: dict[str, str] = {}
    threads = physical_cores()
    with (
        _executor(plan.workers, plan.mode) as pool,
        ExtractProgress(len(items), ref.name, plan.progress) as bar,
        plan.store.writer(plan.key) as writer,
    ):
        # The pool starts (forks) before torch/onnxruntime spin up their thread pools.
        batches = _decoded_batches(
            items, ref.preprocessing, plan.batch_size, pool, plan.workers + 1
        )
        runner: Runner = (
            _onnx_runner(ref, plan.key, plan.store, threads)
            if plan.engine == "onnx"
            else _torch_runner(ref, threads)
        )
        for kept, batch, failed in batches:
            feats = runner(batch) if kept else np.empty((0, 0), np.float32)
            for row, index in enumerate(kept):
                vectors[shas[index]] = feats[row]
                writer.add(shas[index], feats[row])
            for index, reason in failed.items():
                failures[shas[index]] = reason
                writer.add_failure(shas[index], reason)
            bar.advance(len(kept) + len(failed))
    return vectors, failures


def extract(
    paths: Sequence[Path],
    shas: Sequence[str] | None,
    ref: BackboneRef,
    *,
    store: EmbeddingStore,
    engine: str = "auto",
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
    executor: str = "local",
    address: str | None = None,
) -> Extraction:
    """Pooled backbone features for ``paths`` (rows in input order), cached in ``store``.

    ``shas`` are the files' sha256 (from the manifest); None computes them from the bytes.
    Files that cannot be decoded become NaN rows and ``failures[index] = reason``; the run goes
    on.  ``engine``: ``"onnx"`` (ONNX Runtime), ``"torch"`` (eager) or ``"auto"`` (onnx when
    installed).  ``workers``: decode threads (default: physical cores).  ``executor``:
    ``"local"`` (this process) or ``"ray"`` (a Ray Data job on the cluster at ``address``, see
    :mod:`headstart.features.ray_engine`; ``workers`` is then its number of ONNX actors).
    """
    start = time.perf_counter()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    engine = _checked_engine(ref, engine)
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor '{executor}'; known: local, ray")
    if executor == "ray":
        from headstart.features.ray_engine import check_ray  # Ray only when asked for

        check_ray(ref, engine)
    paths = [Path(p) for p in paths]
    failures: dict[int, str] = {}
    if shas is None:
        shas = hash_files(paths, failures)
    elif len(shas) != len(paths):
        raise ConfigError(f"got {len(shas)} sha256 values for {len(paths)} paths")
    plan = _Plan(engine, "", store, batch_size, workers or physical_cores(), DECODE_MODE, progress)
    plan = replace(plan, executor=executor, address=address, actors=workers)
    if ref.is_fused:
        return _extract_fused(paths, shas, failures, ref, plan, start)
    return _extract_one(paths, shas, failures, ref, plan, start)


def _extract_one(
    paths: list[Path],
    shas: Sequence[str],
    failures: dict[int, str],
    ref: BackboneRef,
    plan: _Plan,
    start: float,
) -> Extraction:
    """:func:`extract` for one backbone (``failures``: the files that could not be hashed)."""
    engine = plan.engine
    key = model_key(ref, engine)
    found = _lookup(plan.store, key, shas, failures)
    todo = {
        sha: str(path)
        for i, (path, sha) in enumerate(zip(paths, shas, strict=True))
        if i not in failures and sha not in found
    }
    computed: dict[str, np.ndarray] = {}
    if todo:
        plan.store.write_info(key, _info(ref, engine))
        if plan.executor == "ray":
            from headstart.features.ray_engine import embed_with_ray  # Ray only when asked for

            computed, new_failures = embed_with_ray(
                todo, ref, store=plan.store, key=key, address=plan.address,
                batch_size=plan.batch_size, workers=plan.actors, progress=plan.progress,
            )  # fmt: skip
        else:
            computed, new_failures = _compute(todo, ref, replace(plan, key=key))
        for i, sha in enumerate(shas):
            if sha in new_failures:
                failures[i] = new_failures[sha]
    features = _assemble(len(paths), shas, {**found, **computed}, failures, ref.feature_dim)
    n_cached = sum(1 for i, sha in enumerate(shas) if sha in found and i not in failures)
    return Extraction(
        features=features,
        failures=dict(sorted(failures.items())),
        n_cached=n_cached,
        n_computed=len(computed),
        seconds=time.perf_counter() - start,
        engine=engine,
        keys=(key,),
    )


def _extract_fused(
    paths: list[Path],
    shas: Sequence[str],
    failures: dict[int, str],
    ref: BackboneRef,
    plan: _Plan,
    start: float,
) -> Extraction:
    """Each part through its own cache entries (so a fusion reuses what single-backbone runs
    embedded, and theirs reuse its), columns side by side in the parts' order; a file any
    part cannot read is a failure of the fusion (NaN across every column)."""
    readable = [i for i in range(len(paths)) if i not in failures]
    parts = [
        _extract_one(
            [paths[i] for i in readable], [shas[i] for i in readable], {}, part, plan,
            time.perf_counter(),
        )
        for part in ref.parts
    ]  # fmt: skip
    for extraction in parts:
        for j, reason in extraction.failures.items():
            failures.setdefault(readable[j], reason)
    features = np.full((len(paths), sum(e.features.shape[1] for e in parts)), np.nan, np.float32)
    features[readable] = np.concatenate([e.features for e in parts], axis=1)
    features[sorted(failures)] = np.nan
    return Extraction(
        features=features,
        failures=dict(sorted(failures.items())),
        n_cached=min(e.n_cached for e in parts),
        n_computed=max(e.n_computed for e in parts),
        seconds=time.perf_counter() - start,
        engine=plan.engine,
        parts=parts,
        keys=tuple(k for e in parts for k in e.keys),
    )


def hash_files(paths: Sequence[Path], failures: dict[int, str]) -> list[str]:
    """Each file's sha256 ("" for one that cannot be read, its reason put in ``failures``)."""
    shas = []
    for i, path in enumerate(paths):
        problem = path_problem(path)  # a folder, a pipe (hashing it would block), a .heic
        if problem is not None:
            failures[i] = problem
            shas.append("")
            continue
        try:
            shas.append(file_sha256(path))
        except OSError as exc:
            failures[i] = f"unreadable: {exc.strerror or exc}"
            shas.append("")
    return shas


def _lookup(
    store: EmbeddingStore, key: str, shas: Sequence[str], failures: dict[int, str]
) -> dict[str, np.ndarray]:
    wanted = list(dict.fromkeys(sha for i, sha in enumerate(shas) if i not in failures))
    found = {
        sha: vec
        for sha, vec in zip(wanted, store.get_many(key, wanted), strict=True)
        if vec is not None
    }
    for i, sha in enumerate(shas):
        if i not in failures and sha not in found:
            reason = store.get_failure(key, sha)
            if reason is not None:
                failures[i] = reason
    return found


def _assemble(
    n: int,
    shas: Sequence[str],
    vectors: dict[str, np.ndarray],
    failures: dict[int, str],
    feature_dim: int | None,
) -> np.ndarray:
    dim = next((len(v) for v in vectors.values()), feature_dim or 0)
    features = np.full((n, dim), np.nan, dtype=np.float32)
    for i, sha in enumerate(shas):
        if i not in failures and sha in vectors:
            features[i] = vectors[sha]
    return features


def _info(ref: BackboneRef, engine: str) -> dict[str, Any]:
    return {
        "backbone": ref.name,
        "weights_sha256": ref.weights_sha256,
        "preprocessing": ref.preprocessing.to_dict(),
        "engine": engine,
        **({"int8_sha256": ref.int8_sha256} if ref.int8_sha256 else {}),
    }
