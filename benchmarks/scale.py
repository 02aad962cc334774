"""Scale-out evidence: the local engine against Ray, and the columnar store against one file per
vector; then what embedding 1M and 10M images would take on N machines.

    python benchmarks/scale.py [--data ../shared/data/clothing_small] [--work /work/bench-scale]
                               [--sizes 10000,100000,1000000] [--dim 1280] [--parts engines,store]

Engines: each row is the whole shell command ``headstart embed DATA -q --engine ...`` (start-up
and Ray's start included) into an empty cache that holds only the backbone's ONNX export (the
export is a one-off per machine, not per image); rows:

* ``local``: this process, decode threads + ONNX Runtime;
* ``ray, 1 node``: a Ray cluster the command starts itself (one ONNX actor, one decode CPU);
* ``ray, 2 nodes``: a head and a worker node, one CPU each (``ray.cluster_utils.Cluster``: two
  raylets; one CPU runs the ONNX actor, the other decodes), joined with ``--address``;
* ``local, everything cached``: the command again with every image cached (start-up, scan,
  hashing, the table read): the floor under every row.

Store: synthetic vectors (Gaussian, low-rank covariance; see store_backends.py) written in
commits of 2,048 rows (the writer's batch) into :class:`headstart.features.EmbeddingStore` (Arrow
IPC tables) and into the old layout (one sealed file per vector, as releases before the table
kept them; 1M extrapolated from 100k, marked ``~``); then 3,000 random lookups in a fresh process
(interpreter start and imports excluded: open, index, read, check), and 100 nearest-neighbour
queries (k = 10, exact, whole table).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "clothing_small"
HEADSTART = [sys.executable, "-m", "headstart.cli.main"]
COMMIT = 2_048
N_LOOKUP = 3_000
N_QUERY = 100
K = 10


# -- engines ----------------------------------------------------------------------------------


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "HEADSTART_CACHE": str(cache), "RAY_USAGE_STATS_ENABLED": "0"}


def _timed_run(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-2000:]}")
    return wall, done.stdout.strip().splitlines()[-1]


def _empty_cache(work: Path, name: str, warm: Path) -> Path:
    cache = work / name
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(warm / "onnx", cache / "onnx")
    return cache


def engines(data: Path, work: Path) -> Iterator[tuple[str, float, int, str]]:
    """(row, wall s, images, the command's own summary line), as each is measured."""
    warm = work / "warm"
    if not (warm / "onnx").is_dir():  # the ONNX export, once (a few images are enough)
        few = work / "few" / "a"
        few.mkdir(parents=True, exist_ok=True)
        for photo in sorted(data.rglob("*.jpg"))[:2]:
            shutil.copy(photo, few / photo.name)
        _timed_run([*HEADSTART, "embed", str(few.parent), "-q", "--unlabelled"], _env(warm))
    n = sum(1 for _ in data.rglob("*.jpg"))
    cache = _empty_cache(work, "local", warm)
    wall, line = _timed_run([*HEADSTART, "embed", str(data), "-q"], _env(cache))
    yield ("local", wall, n, line)
    wall, line = _timed_run([*HEADSTART, "embed", str(data), "-q"], _env(cache))
    yield ("local, everything cached", wall, 0, line)
    cache = _empty_cache(work, "ray1", warm)
    argv = [*HEADSTART, "embed", str(data), "-q", "--engine", "ray"]
    wall, line = _timed_run(argv, _env(cache))
    yield ("ray, 1 node (started by the command)", wall, n, line)
    yield _two_nodes(data, work, warm, n)


def _two_nodes(data: Path, work: Path, warm: Path, n: int) -> tuple[str, float, int, str]:
    """A head and a worker node on this machine (two raylets, one CPU each), as Ray's own
    multi-node test utility starts them; the command joins it with ``--address``."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1}
    nodes = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        nodes.add_node(**node)
        nodes.wait_for_nodes()
        cache = _empty_cache(work, "ray2", warm)
        argv = [*HEADSTART, "embed", str(data), "-q", "--engine", "ray", "--address"]
        wall, line = _timed_run([*argv, nodes.address], _env(cache))
    finally:
        ray.shutdown()
        nodes.shutdown()
    return ("ray, 2 nodes on this machine (1 CPU each)", wall, n, line)


# -- store ------------------------------------------------------------------------------------


def _vectors(rng: np.random.Generator, rows: int, dim: int, basis: np.ndarray) -> np.ndarray:
    latent = rng.normal(size=(rows, basis.shape[0])).astype(np.float32)
    return (latent @ basis + 0.3 * rng.normal(size=(rows, dim))).astype(np.float32)


def _data(n: int, dim: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(32, dim)).astype(np.float32)
    shas = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(n)]
    return shas, _vectors(rng, n, dim, basis)


_OLD_HEADER = struct.Struct("<4sI16s")


def _old_put(root: Path, sha: str, vec: np.ndarray) -> None:
    """The per-file layout of earlier releases: one sealed file per vector, written atomically."""
    payload = np.ascontiguousarray(vec, dtype="<f4").tobytes()
    digest = hashlib.blake2b(payload, digest_size=16).digest()
    path = root / sha[:2] / f"{sha}.emb"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(_OLD_HEADER.pack(b"HSE1", len(payload) // 4, digest) + payload)
    os.replace(tmp, path)


def _old_get(root: Path, sha: str) -> np.ndarray | None:
    try:
        data = (root / sha[:2] / f"{sha}.emb").read_bytes()
    except FileNotFoundError:
        return None
    magic, _, digest = _OLD_HEADER.unpack_from(data)
    payload = data[_OLD_HEADER.size :]
    if magic != b"HSE1" or hashlib.blake2b(payload, digest_size=16).digest() != digest:
        return None
    return np.frombuffer(payload, dtype="<f4")


_LOOKUP_CHILD = """
import sys, time
start = time.perf_counter()
from pathlib import Path
import numpy as np
shas = Path(sys.argv[3]).read_text().split()
if sys.argv[1] == "table":
    from headstart.features import EmbeddingStore
    import pyarrow, pyarrow.ipc
    imported = time.perf_counter()
    got = EmbeddingStore(Path(sys.argv[2])).get_many("k", shas)
else:
    sys.path.insert(0, sys.argv[4])
    from scale import _old_get
    imported = time.perf_counter()
    got = [_old_get(Path(sys.argv[2]), sha) for sha in shas]
assert all(g is not None for g in got)
print(time.perf_counter() - imported)
"""


def _lookup(kind: str, root: Path, shas: list[str], work: Path) -> float:
    wanted = work / "wanted.txt"
    wanted.write_text("\n".join(shas))
    argv = [sys.executable, "-c", _LOOKUP_CHILD, kind, str(root), str(wanted), str(HERE)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def store(sizes: list[int], dim: int, work: Path) -> Iterator[tuple[str, int, float, float, float]]:
    """(layout, rows, write s, lookup-3000 s, query-100 s) as measured; extrapolated values
    negative."""
    from headstart.features import EmbeddingStore

    rows = []
    rng = np.random.default_rng(1)
    for n in sizes:
        shas, vectors = _data(n, dim)
        wanted = [shas[i] for i in rng.choice(n, min(N_LOOKUP, n), replace=False)]
        queries = vectors[rng.choice(n, N_QUERY, replace=False)] + 0.01
        root = work / f"table-{n}"
        shutil.rmtree(root, ignore_errors=True)
        table = EmbeddingStore(root)
        start = time.perf_counter()
        with table.writer("k") as writer:
            for lo in range(0, n, COMMIT):
                writer.add_many(shas[lo : lo + COMMIT], vectors[lo : lo + COMMIT])
        write = time.perf_counter() - start
        lookup = _lookup("table", root / "", wanted, work)
        start = time.perf_counter()
        found, _ = table.nearest("k", queries, K)
        query = time.perf_counter() - start
        assert len(found) == N_QUERY and all(len(f) == K for f in found)
        rows.append(("table (Arrow IPC)", n, write, lookup, query))
        yield rows[-1]
        shutil.rmtree(root, ignore_errors=True)
        if n <= 100_000:
            old = work / f"files-{n}"
            shutil.rmtree(old, ignore_errors=True)
            start = time.perf_counter()
            for sha, vec in zip(shas, vectors, strict=True):
                _old_put(old, sha, vec)
            write = time.perf_counter() - start
            lookup = _lookup("files", old, wanted, work)
            start = time.perf_counter()  # a query must read every file first
            matrix = np.stack([_old_get(old, sha) for sha in shas])  # type: ignore[misc]
            unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
            sims = queries @ unit.T
            np.argpartition(-sims, K, axis=1)
            query = time.perf_counter() - start
            rows.append(("one file per vector (old)", n, write, lookup, query))
            yield rows[-1]
            shutil.rmtree(old, ignore_errors=True)
        else:
            ref = next(r for r in reversed(rows) if r[0].startswith("one file"))
            f = n / ref[1]
            rows.append(("one file per vector (old)", n, -ref[2] * f, -ref[3], -ref[4] * f))
            yield rows[-1]


def _s(x: float) -> str:
    return f"~{-x:,.1f}" if x < 0 else f"{x:,.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/work/bench-scale"))
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--parts", default="engines,store")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    if "engines" in parts:
        print(f"\n## Engines: `headstart embed {args.data.name}` (whole command)\n")
        print("| engine | wall s | images | images/s | the command's line |")
        print("|---|---|---|---|---|")
        for name, wall, n, line in engines(args.data, args.work):
            rate = f"{n / wall:.1f}" if n else "-"
            print(f"| {name} | {wall:.1f} | {n} | {rate} | {line} |", flush=True)
    if "store" in parts:
        sizes = [int(s) for s in args.sizes.split(",")]
        print(f"\n## Store: {args.dim}-d float32 vectors (~ = extrapolated from 100k)\n")
        print("| layout | rows | write s | lookup 3,000 s | 100 queries k=10 s |")
        print("|---|---|---|---|---|")
        for name, n, write, lookup, query in store(sizes, args.dim, args.work):
            print(f"| {name} | {n:,} | {_s(write)} | {_s(lookup)} | {_s(query)} |", flush=True)


if __name__ == "__main__":
    main()
