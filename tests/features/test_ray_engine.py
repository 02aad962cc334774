"""``--engine ray``: a Ray Data job on a real two-node cluster embeds what the local engine does,
survives a worker killed mid-job, and the CLI drives it; bad input is one line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

from headstart.backbones import BackboneRef, fuse, resolve_backbone
from headstart.cli.main import main
from headstart.errors import ConfigError
from headstart.features import EmbeddingStore, extract, model_key
from headstart.features.extract import hash_files
from headstart.features.ray_engine import KILL_MARKER_ENV

CLASSES = ("hat", "pants", "shoes", "t-shirt")
# Ray Data reads its own deprecated settings when it ships its context to the workers
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")


class RecordingStore(EmbeddingStore):
    """The store, counting what is written per sha (a retried batch must not write twice)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: dict[str, int] = {}

    def put_many(self, key: str, shas: Sequence[str], vectors: np.ndarray) -> None:
        for sha in shas:
            self.writes[sha] = self.writes.get(sha, 0) + 1
        super().put_many(key, shas, vectors)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node and one worker node (one CPU each), separate processes; its address."""
    import ray
    from ray.cluster_utils import Cluster

    env = pytest.MonkeyPatch()
    env.setenv("RAY_USAGE_STATS_ENABLED", "0")
    node = {"num_cpus": 1, "object_store_memory": 150 * 2**20}
    nodes = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        nodes.add_node(**node)
        nodes.wait_for_nodes()
        yield nodes.address
    finally:
        ray.shutdown()
        nodes.shutdown()
        env.undo()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 real photos in train/validation/test class folders."""
    from salt import copy_demo

    dest = tmp_path_factory.mktemp("ray-data") / "clothes"
    return copy_demo(dest, CLASSES, {"train": 8, "validation": 2, "test": 2})


@pytest.fixture(scope="module")
def ref() -> BackboneRef:
    return resolve_backbone("mobilenet_v2")


@pytest.fixture(scope="module")
def local(
    data: Path, ref: BackboneRef, shared_cache: Path
) -> tuple[EmbeddingStore, list[Path], np.ndarray]:
    """The local engine's embeddings (and the ONNX export the other caches copy), through
    the session's shared cache: its export and any photo already embedded are reused."""
    store = EmbeddingStore(shared_cache)
    paths = sorted(data.rglob("*.jpg"))
    result = extract(paths, None, ref, store=store, progress=False)
    assert result.n_computed + result.n_cached == len(paths) == 48 and not result.failures
    return store, paths, result.features


def _fresh(root: Path, warm: EmbeddingStore, ref: BackboneRef) -> RecordingStore:
    """An empty cache holding the warm cache's ONNX export (no second export)."""
    source = warm.onnx_path(model_key(ref, "onnx"))
    store = RecordingStore(root)
    target = store.onnx_path(model_key(ref, "onnx"))
    target.parent.mkdir(parents=True, exist_ok=True)
    for path in source.parent.glob(source.name + "*"):  # the file and its digest
        shutil.copy(path, target.parent / path.name)
    return store


def test_ray_embeds_what_local_does(
    cluster: str,
    local: tuple[EmbeddingStore, list[Path], np.ndarray],
    ref: BackboneRef,
    tmp_path: Path,
) -> None:
    warm, paths, expected = local
    store = _fresh(tmp_path / "cache", warm, ref)
    result = extract(
        paths, None, ref, store=store, progress=False, batch_size=8, executor="ray",
        address=cluster,
    )  # fmt: skip
    assert result.n_computed == len(paths) and not result.failures
    assert np.abs(result.features - expected).max() <= 1e-5
    assert sorted(store.writes) == sorted(hash_files(paths, {}))
    assert set(store.writes.values()) == {1}
    # the cache the ray engine filled is the one the local engine reads
    again = extract(paths, None, ref, store=store, progress=False)
    assert again.n_cached == len(paths) and again.n_computed == 0
    assert np.array_equal(again.features, result.features)
    # two actors would hold both CPUs of the cluster: nothing would decode
    other = _fresh(tmp_path / "other", warm, ref)
    with pytest.raises(ConfigError, match="leave no CPU for decoding"):
        extract(paths, None, ref, store=other, workers=2, executor="ray", address=cluster)


def test_a_worker_killed_mid_job_loses_nothing(
    cluster: str,
    local: tuple[EmbeddingStore, list[Path], np.ndarray],
    ref: BackboneRef,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warm, paths, expected = local
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_MARKER_ENV, str(marker))
    store = _fresh(tmp_path / "cache", warm, ref)
    result = extract(
        paths, None, ref, store=store, progress=False, batch_size=6, executor="ray",
        address=cluster,
    )  # fmt: skip
    assert marker.exists(), "no actor was killed"
    assert result.n_computed == len(paths) and not result.failures
    shas = hash_files(paths, {})
    assert sorted(store.writes) == sorted(shas) and set(store.writes.values()) == {1}
    assert np.abs(result.features - expected).max() <= 1e-5
    stored = store.get_many(model_key(ref, "onnx"), shas)
    assert all(v is not None for v in stored)
    assert np.abs(np.stack(stored) - expected).max() <= 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    command = [sys.executable, "-m", "headstart.cli.main", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_cli_embeds_on_the_cluster(
    cluster: str,
    data: Path,
    local: tuple[EmbeddingStore, list[Path], np.ndarray],
    ref: BackboneRef,
    tmp_path: Path,
) -> None:
    warm = local[0]
    cache = tmp_path / "cache"
    _fresh(cache, warm, ref)
    args = ["embed", str(data), "--engine", "ray", "--address", cluster, "--cache-dir", str(cache)]
    done = _cli(*args, "-q")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stdout.strip().splitlines()
    assert "on ray: 48 images embedded, 0 cached already, 0 failed" in line, line
    # nothing left to do: the cluster is not even needed
    assert main(["embed", str(data), "--cache-dir", str(cache), "-q"]) == 0
    # fit embeds on the cluster too, into the cache it then reads
    fit_cache = tmp_path / "fit-cache"
    _fresh(fit_cache, warm, ref)
    run = tmp_path / "run"
    argv = ["fit", str(data), "-o", str(run), "-q", "--no-report", "--engine", "ray",
            "--address", cluster, "--set", f"extract.cache_dir={fit_cache}",
            "--set", "eval.n_boot=20"]  # fmt: skip
    assert main(argv) == 0
    assert (run / "model" / "model.json").is_file()
    assert len(EmbeddingStore(fit_cache).table(model_key(ref, "onnx"))) == 48
    unreachable = f"127.0.0.1:{_free_port()}"
    other = tmp_path / "other"
    done = _cli("embed", str(data), "--engine", "ray", "--address", unreachable, "--cache-dir",
                str(other), "-q")  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    (err,) = done.stderr.strip().splitlines()
    assert err.startswith("headstart: error: cannot reach the Ray cluster") and unreachable in err


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("headstart: error:") and needle in err, err


def test_bad_input_is_one_line(
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ray = ["--engine", "ray", "--cache-dir", str(tmp_path / "cache")]
    _one_line_error(capsys, ["embed", str(data), *ray, "--address", "nowhere"], "'nowhere'")
    _one_line_error(capsys, ["embed", str(tmp_path / "nope"), *ray], "nope")
    _one_line_error(capsys, ["embed", str(data), "--engine", "spark"], "local, ray")
    _one_line_error(capsys, ["fit", str(data), "--address", "auto"], "--engine ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    _one_line_error(capsys, ["embed", str(data), *ray], "pip install 'headstart[ray]'")
    _one_line_error(capsys, ["fit", str(data), "--engine", "ray"], "pip install 'headstart[ray]'")


def test_ray_refuses_what_runs_locally_only(ref: BackboneRef, tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    fused = fuse([ref, resolve_backbone("efficientnet_lite0")])
    with pytest.raises(ConfigError, match="fusion"):
        extract([], [], fused, store=store, executor="ray")
    with pytest.raises(ConfigError, match=r"extract\.engine=torch"):
        extract([], [], ref, store=store, engine="torch", executor="ray")
    with pytest.raises(ConfigError, match="local, ray"):
        extract([], [], ref, store=store, executor="dask")
