"""Embed on a Ray cluster with a Ray Data pipeline; only the driver writes the embedding store.

    from_items((path, sha)) -> map_batches(decode: CPU tasks) -> map_batches(ONNX Runtime
    actors) -> the driver: the store's writer (one commit per few thousand rows), with the
    failures of images that cannot be decoded

Decoding and preprocessing are :mod:`headstart.features.extract`'s own, and the actors run the
very ONNX file the local engine runs (exported once by the driver, read by each actor from the
cache and checked against its sha256), so the vectors equal the local engine's.  Actors are
restarted and their batches retried when a worker dies (Ray Data's defaults for actor pools,
``max_restarts=-1`` and ``max_task_retries=-1``; passing them is deprecated since Ray 2.5x):
a killed worker loses nothing, and as only the driver writes, a retried batch can never store
a row twice.  Every node must see the images and the cache folder at the same paths (a shared
file system).

Ray is optional (``pip install 'headstart[ray]'``): nothing here imports it until a job runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import BackboneRef
from headstart.errors import BackboneError, ConfigError
from headstart.features.onnx_engine import OnnxFeatures, cached_export, export_onnx
from headstart.features.progress import ExtractProgress
from headstart.features.store import EmbeddingStore, StoreWriter

__all__ = [
    "EXECUTORS",
    "INSTALL_HINT",
    "check_ray",
    "connect",
    "embed_with_ray",
    "ray_available",
    "require_ray",
]

EXECUTORS = ("local", "ray")
INSTALL_HINT = "pip install 'headstart[ray]'"
KILL_MARKER_ENV = "HEADSTART_TEST_RAY_KILL_MARKER"
"""Tests only: a path; the first ONNX actor to reach its second batch creates it and kills its
own process (SIGKILL), so a test sees a worker die mid-job exactly once."""

Vectors = dict[str, np.ndarray]
Failures = dict[str, str]


def ray_available() -> bool:
    """True when Ray Data is installed here (found, not imported: Ray takes seconds to load)."""
    return importlib.util.find_spec("ray") is not None


def require_ray(address: str | None = None) -> None:
    """One-line :class:`ConfigError` when Ray is not installed, or ``address`` is not one Ray
    takes (checked before any work: the cluster is reached later, when images need it)."""
    if not ray_available():
        raise ConfigError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}")
    if address not in (None, "auto"):
        _host_port(address)


def check_ray(ref: BackboneRef, engine: str) -> None:
    """One-line :class:`ConfigError` unless ``ref`` can be embedded on Ray with ``engine``
    (the resolved inference engine): Ray installed, one image backbone, ONNX Runtime."""
    require_ray()
    if ref.is_fused:
        raise ConfigError(
            f"--engine ray embeds one backbone; '{ref.name}' is a fusion: embed each part "
            "with --engine ray, or the fusion with --engine local"
        )
    if ref.text is not None:
        raise ConfigError(f"--engine ray embeds images; text encoder '{ref.name}' runs locally")
    if engine != "onnx":
        raise ConfigError(
            f"--engine ray runs ONNX Runtime; extract.engine={engine} runs with --engine local"
        )


def _ray() -> Any:
    """The ``ray`` module, with usage statistics off (headstart never phones home)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    require_ray()
    import ray  # lazy: seconds to import, and an optional extra

    return ray


def _host_port(address: str) -> tuple[str, int]:
    """``host`` and ``port`` of ``HOST:PORT`` or ``ray://HOST:PORT`` (one line when malformed)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"bad Ray address '{address}': use auto, HOST:PORT (the head's GCS port, "
            "6379 by default) or ray://HOST:PORT (Ray Client, 10001 by default)"
        )
    return host.strip("[]"), int(port)


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in one line, at once, when nothing listens at ``address`` (Ray itself would retry
    for a minute and print pages)."""
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        cause = exc.strerror or str(exc) or type(exc).__name__
        raise ConfigError(f"cannot reach the Ray cluster at '{address}': {cause}") from None


def _running_cluster() -> str | None:
    """The cluster ``ray.init()`` would join when given no address (``RAY_ADDRESS``, else the
    latest ``ray start`` on this machine), or None."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a Ray without it: let ray.init decide
        return os.environ.get("RAY_ADDRESS") or None
    try:
        found: str | None = canonicalize_bootstrap_address(None)  # type: ignore[arg-type]
    except (ConnectionError, ValueError):
        return None
    return found


def connect(address: str | None = None) -> None:
    """Connect this process to Ray, once: ``address`` None joins the cluster Ray finds
    (``RAY_ADDRESS``, or the latest ``ray start`` here) or starts a local one on this
    machine's CPUs; ``"auto"`` joins a running cluster (never starts one); ``HOST:PORT`` a
    head node; ``ray://HOST:PORT`` a Ray Client server.  A process already connected stays
    on its cluster.  A bad or unreachable address is a one-line :class:`ConfigError`."""
    ray = _ray()
    if ray.is_initialized():
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    target = _running_cluster() if address is None else address
    if target not in (None, "auto"):
        _reachable(target)
    try:
        if target is None:
            # a new local cluster turns Ray's token authentication on and says so: not news
            logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
            ray.init(num_cpus=cpus, include_dashboard=False, **quiet)
        elif target.startswith("ray://"):
            ray.init(address=target, **quiet)
        else:
            ray.init(address=target, include_dashboard=False, **quiet)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        if target == "auto":
            raise ConfigError(
                "--address auto: no running Ray cluster found; start one (`ray start --head`) "
                "or leave --address out to start a local one"
            ) from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot connect to the Ray cluster at '{target}': {first}") from None


def _model_file(ref: BackboneRef, key: str, store: EmbeddingStore) -> tuple[str, str]:
    """The ONNX file the actors load and its sha256: the int8 model, or the cached export
    (made here, on the driver, once)."""
    if ref.int8_path is not None:
        from headstart.features.extract import int8_bytes  # checks the digest

        int8_bytes(ref)
        return str(ref.int8_path), ref.int8_sha256
    path = store.onnx_path(key)
    model = cached_export(path, lambda p: export_onnx(ref.build(), p))
    if model is None:  # export_onnx returns its path or raises
        raise BackboneError(f"backbone '{ref.name}' could not be exported to ONNX")
    return str(path), hashlib.sha256(model).hexdigest()


def decode(batch: dict[str, np.ndarray], prep: Preprocessing) -> dict[str, np.ndarray]:
    """Ray Data task: rows (path, sha) -> (sha, pixels, error); a row that cannot be decoded
    keeps zero pixels and its reason in ``error`` ("" for the others)."""
    from headstart.features.extract import _decode_batch  # the local engine's own decode

    paths = [str(p) for p in batch["path"]]
    kept, pixels, failed = _decode_batch(list(enumerate(paths)), prep)
    if len(kept) < len(paths):
        full = np.zeros((len(paths), *pixels.shape[1:]), np.float32)
        full[kept] = pixels
        pixels = full
    errors = np.array([failed.get(i, "") for i in range(len(paths))], dtype=object)
    return {"sha": batch["sha"], "pixels": pixels, "error": errors}


class OnnxEmbedder:
    """Ray Data actor: loads the ONNX file once (after checking its sha256), then turns batches
    (sha, pixels, error) into (sha, vector, error, fatal); failed rows get zero vectors.
    ``fatal`` is "" unless the model could not be loaded on this node: then every row of every
    batch says why, and the driver stops with that one line (Ray would hand it a traceback
    as text, the exception itself lost on the way)."""

    def __init__(self, model_path: str, sha256: str, crop: int, kill_marker: str = "") -> None:
        self._problem = ""
        try:
            model = _checked_model(model_path, sha256)
        except BackboneError as exc:
            self._problem = str(exc)
            return
        # one thread per actor: the pool scales with actors, and decode tasks share the node
        self._run = OnnxFeatures(model, threads=1, spinning=False)
        self._dim = self._run(np.zeros((1, 3, crop, crop), np.float32)).shape[1]
        self._batches = 0
        self._kill_marker = kill_marker

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = batch["error"]
        fatal = np.full(len(errors), self._problem, dtype=object)
        if self._problem:
            vectors = np.zeros((len(errors), 1), np.float32)
            return {"sha": batch["sha"], "vector": vectors, "error": errors, "fatal": fatal}
        if self._kill_marker and self._batches:
            _die_once(self._kill_marker)
        ok = np.flatnonzero(errors == "")
        vectors = np.zeros((len(errors), self._dim), np.float32)
        if len(ok):
            vectors[ok] = self._run(np.asarray(batch["pixels"][ok], dtype=np.float32))
        self._batches += 1
        return {"sha": batch["sha"], "vector": vectors, "error": errors, "fatal": fatal}


def _checked_model(path: str, sha256: str) -> bytes:
    """The bytes of the ONNX file at ``path`` on this node, if they match ``sha256``."""
    try:
        model = Path(path).read_bytes()
    except OSError as exc:
        raise BackboneError(
            f"ONNX model {path} cannot be read on Ray node {socket.gethostname()}: "
            f"{exc.strerror or exc} (every node must see the cache folder)"
        ) from None
    if hashlib.sha256(model).hexdigest() != sha256:
        raise BackboneError(
            f"ONNX model {path} on Ray node {socket.gethostname()} does not match the "
            f"driver's (sha256 {sha256[:12]}...): every node must see the same cache folder"
        )
    return model


def _die_once(marker: str) -> None:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _actor_memory(model_path: str, batch_size: int, crop: int) -> int:
    """Bytes an ONNX actor holds: the interpreter and libraries, the model a few times over
    (bytes read, session, arena) and a batch's activations.  Measured for mobilenet_v2 at
    batch 32: 370 MB resident; this gives 470 MB."""
    batch = batch_size * 3 * crop * crop * 4
    return 128 * 2**20 + 4 * os.path.getsize(model_path) + 16 * batch


def _shares(cpus: float, workers: int | None) -> tuple[int, float, float]:
    """ONNX actors, CPUs per actor and per decode task on a cluster of ``cpus``: by default
    half the CPUs embed and half decode; a pool holding every CPU would starve the decoding
    (a one-line error when ``workers`` asks for that)."""
    if cpus < 2:  # one CPU: the actor and one decode task share it
        return 1, cpus / 2, cpus / 2
    actors = workers or int(cpus // 2)
    if actors >= cpus:
        raise ConfigError(
            f"extract.workers={actors} ONNX actors leave no CPU for decoding on a Ray cluster "
            f"of {cpus:g} CPUs; use at most {int(cpus) - 1}"
        )
    return actors, 1.0, 1.0


def _pipeline(
    ray: Any, todo: dict[str, str], ref: BackboneRef, model: tuple[str, str], batch_size: int,
    workers: int | None,
) -> Any:  # fmt: skip
    """The Ray Data dataset of (sha, vector, error, fatal) rows for ``todo`` (sha -> path)."""
    actors, actor_cpus, decode_cpus = _shares(float(ray.cluster_resources()["CPU"]), workers)
    rows = [{"path": path, "sha": sha} for sha, path in todo.items()]
    blocks = max(1, min(len(rows) // batch_size, 10_000))
    return (
        ray.data.from_items(rows, override_num_blocks=blocks)
        .map_batches(
            decode, batch_size=batch_size, batch_format="numpy",
            fn_kwargs={"prep": ref.preprocessing}, num_cpus=decode_cpus,
        )
        .map_batches(
            OnnxEmbedder, batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=actor_cpus,
            # an actor's memory also keeps Ray Data from fusing the decode tasks into the
            # actors (it fuses steps of equal requests): fused, every CPU the pool does not
            # hold would sit idle
            memory=_actor_memory(model[0], batch_size, ref.preprocessing.crop),
            fn_constructor_kwargs={
                "model_path": model[0], "sha256": model[1], "crop": ref.preprocessing.crop,
                "kill_marker": os.environ.get(KILL_MARKER_ENV, ""),
            },
        )
    )  # fmt: skip


def embed_with_ray(
    todo: dict[str, str],
    ref: BackboneRef,
    *,
    store: EmbeddingStore,
    key: str,
    address: str | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[Vectors, Failures]:
    """Embed the images ``todo`` (sha -> path) on Ray and store each result batch as it
    arrives (the computation step of :func:`headstart.features.extract`, on a cluster):
    returns (sha -> vector, sha -> failure reason).  ``workers``: ONNX Runtime actors
    (default: half the cluster's CPUs; decode tasks get the rest)."""
    check_ray(ref, "onnx")
    connect(address)  # first: a wrong address is the likeliest mistake, and quick to report
    model = _model_file(ref, key, store)
    ray = _ray()
    vectors: Vectors = {}
    failures: Failures = {}
    with (
        _quiet(ray),
        ExtractProgress(len(todo), f"{ref.name} (ray)", progress) as bar,
        store.writer(key) as writer,
    ):
        dataset = _pipeline(ray, todo, ref, model, batch_size, workers)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if len(batch["fatal"]) and batch["fatal"][0]:
                raise BackboneError(str(batch["fatal"][0]))
            bar.advance(_store_batch(batch, writer, vectors, failures))
    return vectors, failures


@contextmanager
def _quiet(ray: Any) -> Iterator[None]:
    """Ray Data without its progress bars and execution chatter (the driver shows one bar),
    put back as it was afterwards."""
    ctx = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved = ctx.enable_progress_bars, ctx.print_on_execution_start, logger.level
    ctx.enable_progress_bars = ctx.print_on_execution_start = False
    logger.setLevel(logging.ERROR)  # "progress bars disabled", plans and timings
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved[:2]
        logger.setLevel(saved[2])


def _store_batch(
    batch: dict[str, np.ndarray], writer: StoreWriter, vectors: Vectors, failures: Failures
) -> int:
    """Hand one result batch to the store's writer (rows already seen are skipped: a retried
    batch adds nothing); the number of rows."""
    shas = [str(s) for s in batch["sha"]]
    errors = [str(e) for e in batch["error"]]
    fresh = [i for i, sha in enumerate(shas) if sha not in vectors and sha not in failures]
    ok = [i for i in fresh if not errors[i]]
    if ok:
        rows = np.asarray(batch["vector"][ok], dtype=np.float32)
        writer.add_many([shas[i] for i in ok], rows)
        vectors.update(zip((shas[i] for i in ok), rows, strict=True))
    for i in fresh:
        if errors[i]:
            failures[shas[i]] = errors[i]
            writer.add_failure(shas[i], errors[i])
    return len(shas)
