"""The fixed costs of a fit as a user sees them: whole processes, start-up and imports included.

    python benchmarks/fit_costs.py [--data ../shared/data/clothing_small] [--repeats 3]

Copies images of ``--data`` to a temporary folder (class folders kept) and times, each
``--repeats`` times (median reported, interleaved so load drift hits every row alike):

(a) ``headstart fit DATA400 -o RUN`` on ``--images`` (400) new images with a fresh, empty cache
    (weights conversion, ONNX export, decoding, embedding, head, evaluation, report) against the
    plain hand-written pipeline of ``benchmarks/extract.py`` (torchvision ImageFolder, DataLoader,
    mobilenet_v2 features; started as its own process) on the same images, and their ratio;
(a') the same fit where headstart has been used before: the backbone's ONNX export and weights
    are cached (a fit of the bundled demo photos first), the images are new;
(b) a second ``headstart fit`` of the same images, cache warm;
(c) ``headstart report RUN`` alone on a run of ``--report-images`` (1,200) images, with the
    report's overlay cache emptied first (cold: Grad-CAM and the embedding map computed) and
    kept (warm).

Also prints the in-process split of each fit (the ``Done in`` line of ``headstart fit``, else
``RUN/run.json`` ``timings_s``), the machine load (``os.getloadavg()``) before and after, and
``torch.backends.cpu.get_cpu_capability()``.  Prints a markdown table; never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
DEFAULT_DATA = BENCHMARKS.parents[1] / "shared" / "data" / "clothing_small"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_DONE = re.compile(r"Done in [\d.]+ s \(([^)]*)\)")


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def copy_sample(root: Path, n: int, out: Path) -> Path:
    """``n`` images spread evenly over ``root`` (sorted, so every class is drawn), copied to
    ``out`` with their folders relative to ``root`` (class and split folders kept)."""
    files = _images(root)
    if len(files) < n:
        sys.exit(f"{root} has {len(files)} images, fewer than the {n} asked for")
    step = len(files) / n
    for i in range(n):
        src = files[int(i * step)]
        dst = out / src.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return out


def _headstart() -> list[str]:
    """The ``headstart`` command a user types (the console script beside this Python)."""
    script = Path(sys.executable).parent / "headstart"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "headstart.cli.main"]


def _run(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, str]:
    """Wall seconds of one process and its output (kept in ``log``)."""
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    log.write_text(f"$ {' '.join(cmd)}\n{output}")
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log}")
    return seconds, output


def _split(output: str, run: Path) -> dict[str, float]:
    """The fit's own timings: the CLI's ``Done in`` line (it includes the report), else
    run.json's ``timings_s``."""
    found = _DONE.search(output.replace("\n", " "))
    if found:
        parts = (p.strip().split() for p in found.group(1).split(","))
        return {name: float(value.rstrip("s")) for name, value in parts}
    record = json.loads((run / "run.json").read_text())
    return {k: float(v) for k, v in record.get("timings_s", {}).items()}


class Bench:
    """Runs the measures, keeps every wall time and every in-process split."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env
        self.walls: dict[str, list[float]] = {}
        self.splits: dict[str, list[dict[str, float]]] = {}
        self.count = 0

    def time(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> str:
        self.count += 1
        seconds, output = _run(cmd, env or self.env, self.work / f"log-{self.count:02d}.txt")
        self.walls.setdefault(name, []).append(seconds)
        print(f"  {name}: {seconds:.2f} s", file=sys.stderr, flush=True)
        return output

    def fit(self, name: str, data: Path, run: Path, cache: Path, *extra: str) -> None:
        env = {**self.env, "HEADSTART_CACHE": str(cache)}
        output = self.time(name, [*_headstart(), "fit", str(data), "-o", str(run), *extra], env)
        self.splits.setdefault(name, []).append(_split(output, run))


def _plain_cmd(data: Path) -> list[str]:
    """benchmarks/extract.py's plain torchvision pipeline, in a process of its own."""
    code = (
        "import sys; from pathlib import Path; "
        f"sys.path.insert(0, {str(BENCHMARKS)!r}); "
        "from extract import plain_pipeline; "
        f"paths, features, seconds = plain_pipeline(Path({str(data)!r}), None); "
        "print(len(paths), features.shape, f'{seconds:.2f}')"
    )
    return [sys.executable, "-c", code]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cell(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _table(bench: Bench, n_images: int, n_report: int) -> str:
    w = bench.walls
    plain, cold = _median(w.get("plain", [])), _median(w.get("fit cold", []))
    known = _median(w.get("fit new images", []))
    ratio = f"plain / headstart = {plain / cold:.2f}x (target >= 4x)"
    ratio_known = f"plain / headstart = {plain / known:.2f}x"
    rows = [
        ("a", f"plain torchvision script, {n_images} images (benchmarks/extract.py)", "plain", ""),
        ("a", f"`headstart fit`, {n_images} new images, empty cache", "fit cold", ratio),
        (
            "a'",
            f"`headstart fit`, {n_images} new images, backbone already exported",
            "fit new images",
            ratio_known,
        ),
        ("b", f"`headstart fit`, same {n_images} images, cache warm", "fit warm", "target < 3 s"),
        ("c", f"`headstart report`, {n_report}-image run, cold", "report cold", "target < 2 s"),
        ("c", f"`headstart report`, {n_report}-image run, warm", "report warm", "target < 2 s"),
    ]
    lines = [
        "| | process (wall, start-up included) | runs (s) | median (s) | note |",
        "|---|---|---|---|---|",
    ]
    for key, name, measure, note in rows:
        values = w.get(measure, [])
        lines.append(f"| {key} | {name} | {_cell(values)} | {_median(values):.2f} | {note} |")
    return "\n".join(lines)


def _split_table(bench: Bench) -> str:
    lines = ["| fit | median wall (s) | in-process split, median (s) | outside the split (s) |"]
    lines.append("|---|---|---|---|")
    for name, splits in bench.splits.items():
        keys = list(dict.fromkeys(k for s in splits for k in s))
        med = {k: _median([s.get(k, 0.0) for s in splits]) for k in keys}
        wall = _median(bench.walls[name])
        inside = ", ".join(f"{k} {v:.2f}" for k, v in med.items())
        rest = _median(
            [w - sum(s.values()) for w, s in zip(bench.walls[name], splits, strict=True)]
        )
        lines.append(f"| {name} | {wall:.2f} | {inside} | {rest:.2f} (start-up, imports) |")
    return "\n".join(lines)


def _cpu_capability() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    return str(torch.backends.cpu.get_cpu_capability())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=400, help="new images of (a) and (b)")
    parser.add_argument("--report-images", type=int, default=1200, help="size of the (c) run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"no data folder at {args.data}; pass --data")
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="fit-costs-"))
    env = {k: v for k, v in os.environ.items() if k != "HEADSTART_CACHE"}
    bench = Bench(work, env)
    try:
        train = args.data / "train" if (args.data / "train").is_dir() else args.data
        small = copy_sample(train, args.images, work / "data-small")
        large = copy_sample(args.data, args.report_images, work / "data-large")
        print(f"work folder {work}", file=sys.stderr)
        from headstart.demo import demo_data_dir

        demo = demo_data_dir()
        steps: list[Callable[[int], object]] = [
            lambda i: bench.time("plain", _plain_cmd(small)),
            lambda i: bench.fit("fit cold", small, work / f"cold-{i}", work / f"cache-{i}"),
            lambda i: bench.fit("fit warm", small, work / f"warm-{i}", work / f"cache-{i}"),
            lambda i: bench.fit(
                "earlier project (setup of a')", demo, work / f"demo-{i}", work / f"known-{i}"
            ),
            lambda i: bench.fit("fit new images", small, work / f"new-{i}", work / f"known-{i}"),
        ]
        for i in range(args.repeats):
            for step in steps:
                step(i)
        # (c): one run of the large sample (its embeddings cached once), then the report alone
        cache = work / "cache-report"
        bench.fit("fit large (setup of c)", large, work / "large", cache, "--no-report")
        report = [*_headstart(), "report", str(work / "large")]
        report_env = {**env, "HEADSTART_CACHE": str(cache)}
        for _ in range(args.repeats):
            shutil.rmtree(cache / "report-overlays", ignore_errors=True)
            bench.time("report cold", report, report_env)
            bench.time("report warm", report, report_env)
        load_after = os.getloadavg()
        print(f"\n## headstart fixed costs ({args.data}, {args.repeats} runs each)\n")
        print(_table(bench, args.images, args.report_images))
        print("\nIn-process split (`Done in` line of `headstart fit`):\n")
        print(_split_table(bench))
        print(
            f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, torch CPU capability "
            f"{_cpu_capability()}, Python {platform.python_version()}."
        )
        print(
            "Load average (1/5/15 min): before "
            + "/".join(f"{x:.2f}" for x in load_before)
            + ", after "
            + "/".join(f"{x:.2f}" for x in load_after)
            + "."
        )
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
