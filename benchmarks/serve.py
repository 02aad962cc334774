"""Web service load test on loopback, and torch vs onnxruntime backbone speed for serving.

    python benchmarks/serve.py [--model RUN/model] [--requests 2000] [--concurrency 16]

(a) `headstart serve` runs in a subprocess on 127.0.0.1 (a quick 3-class demo model is fitted in a
    temporary folder when no --model is given).  A plain baseline, one request at a time, then the
    bounded load test: --requests POST /v1/predict (one real demo JPEG each) from --concurrency
    httpx.AsyncClient workers, stopped at --max-seconds.  Reports p50/p99 latency, throughput and
    the error count (anything but a 200 with a prediction).
(b) Model.predict_images on decoded demo photos in batches of 16, engine="torch" vs engine="onnx",
    in the same run: img/s and the max abs difference of their probabilities (every task's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("hat", "pants", "shoes")


def quick_model(workdir: Path) -> Path:
    import headstart
    from headstart.demo import demo_data_dir

    data = workdir / "data"
    for cls in CLASSES:
        shutil.copytree(demo_data_dir() / "train" / cls, data / cls)
    return headstart.fit(data, workdir / "run", progress=False).bundle_dir


def photos() -> list[bytes]:
    from headstart.demo import demo_data_dir

    folders = [demo_data_dir() / "test" / cls for cls in CLASSES]
    return [p.read_bytes() for folder in folders for p in sorted(folder.glob("*.jpg"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    import httpx

    cmd = [sys.executable, "-m", "headstart.cli.main", "serve", str(model), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--no-explain"], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 180 s")


async def load(
    url: str, images: list[bytes], n: int, concurrency: int, budget: float
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(n))
    stop_at = time.monotonic() + budget

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            if time.monotonic() > stop_at:
                return
            body = {"files": (f"{i}.jpg", images[i % len(images)], "image/jpeg")}
            t0 = time.perf_counter()
            try:
                r = await client.post(url, files=body)
                ok = r.status_code == 200 and not r.json()["results"][0]["error"]
                if not ok:
                    errors.append(f"{r.status_code} {r.text[:80]}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {
        "done": len(latencies),
        "wall": wall,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "rps": len(latencies) / wall,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def engines(model_dir: Path, images: list[bytes], rounds: int) -> list[tuple[str, float, float]]:
    import io

    from PIL import Image

    import headstart

    decoded = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    batches = [decoded[i : i + 16] for i in range(0, len(decoded), 16)]
    rows, reference = [], None
    for engine in ("torch", "onnx"):
        model = headstart.load(model_dir)
        model.predict_images(batches[0], engine=engine)  # build + warm
        start = time.perf_counter()
        for _ in range(rounds):
            per_batch = [model.predict_images(b, engine=engine) for b in batches]
            # every task's probabilities side by side, batches stacked
            proba = np.concatenate(
                [np.concatenate([p[t.name] for t in model.tasks], axis=1) for p in per_batch]
            )
        seconds = time.perf_counter() - start
        diff = 0.0 if reference is None else float(np.abs(proba - reference).max())
        reference = proba if reference is None else reference
        rows.append((engine, rounds * len(decoded) / seconds, diff))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--baseline-requests", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--engine-rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="headstart-serve-bench-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("HEADSTART_CACHE", str(work / "cache"))
        model = args.model or quick_model(work)
        images = photos()
        port = free_port()
        server = start_server(model, port, work / "server.log")
        url = f"http://127.0.0.1:{port}/v1/predict"
        try:
            asyncio.run(load(url, images, 32, 8, 60))  # warm-up, not counted
            plain = asyncio.run(load(url, images, args.baseline_requests, 1, args.max_seconds))
            loaded = asyncio.run(
                load(url, images, args.requests, args.concurrency, args.max_seconds)
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
        engine_rows = engines(model, images, args.engine_rounds)

    print(f"\nheadstart serve on loopback ({os.cpu_count()} CPUs), model {model}")
    print(f"{'run':<26}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}")
    for name, r in (("sequential (baseline)", plain), (f"concurrency {args.concurrency}", loaded)):
        print(
            f"{name:<26}{r['done']:>9}{r['errors']:>8}{r['p50']:>9.1f}{r['p99']:>9.1f}"
            f"{r['rps']:>8.1f}"
        )
        if r["first_error"]:
            print(f"  first error: {r['first_error']}")
    print(f"throughput gain from batching: {loaded['rps'] / plain['rps']:.2f}x")
    print(f"\npredict_images, batches of 16, {len(images)} photos x {args.engine_rounds} rounds")
    print(f"{'engine':<10}{'img/s':>9}{'max |dp| vs torch':>20}")
    for engine, rate, diff in engine_rows:
        print(f"{engine:<10}{rate:>9.1f}{diff:>20.2e}")


if __name__ == "__main__":
    main()
