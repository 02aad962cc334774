"""Compression on clothing_small's test split, in one run: static int8 against fp32 ONNX
Runtime, a pruned fine-tuned mobilenet_v2 against the unpruned one, and a mobilenet_v2 student
distilled from the best teacher against that teacher and the mobilenet_v2 probe.

    python benchmarks/compress.py [--data ../shared/data/clothing_small] [--work DIR]
                                  [--teacher stack|fusion] [--set train.epochs=3 ...]

Steps, each a whole ``headstart`` command from the shell (start-up included), timed:

1. ``fit DATA -b mobilenet_v2``: the mobilenet_v2 probe (the student's bar);
2. the teacher: four probes (mobilenet_v2, efficientnet_lite0/1/2) and
   ``ensemble --method stack`` (``--teacher fusion``: one probe on the fused features);
3. ``fit DATA --strategy finetune -b mobilenet_v2``: the model pruning starts from;
4. ``compress PROBE DATA --methods int8``: int8 against fp32, both as exported ONNX graphs;
5. ``compress FINETUNED DATA --methods prune:0.3``;
6. ``compress TEACHER DATA --methods distill:mobilenet_v2``.

Each compress writes ``compress.json``; this script prints one markdown table of every record
(accuracy with its 95% CI, images/s and size of the ONNX export, wall seconds to make it) and
the issue's targets against what was measured.  Set ``HEADSTART_CACHE`` to a cache warm for
clothing_small's embeddings to skip their extraction (the fits' seconds then exclude it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HEADSTART = str(Path(sys.executable).with_name("headstart"))
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "clothing_small"
LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _run(*args: str) -> float:
    """Run ``headstart ARGS`` from the shell; its wall seconds."""
    start = time.perf_counter()
    print("$ headstart", " ".join(args), flush=True)
    done = subprocess.run([HEADSTART, *args], check=False)
    if done.returncode != 0:
        sys.exit(f"headstart {' '.join(args)} failed with exit {done.returncode}")
    return time.perf_counter() - start


def _fit(data: Path, out: Path, *args: str) -> float:
    if (out / "model").is_dir():
        return float("nan")  # kept from an earlier run of this script
    return _run("fit", str(data), "-o", str(out), "--no-report", "-q", *args)


def _teacher(data: Path, work: Path, kind: str) -> tuple[Path, float]:
    if kind == "fusion":
        out = work / "teacher-fusion"
        fused = "+".join(("mobilenet_v2", *LITES))
        return out / "model", _fit(data, out, "-b", fused)
    seconds = 0.0
    runs = []
    for backbone in ("mobilenet_v2", *LITES):
        out = work / f"probe-{backbone}"
        seconds += _fit(data, out, "-b", backbone)
        runs.append(str(out))
    out = work / "teacher-stack"
    if not (out / "model").is_dir():
        seconds += _run("ensemble", *runs, "-o", str(out), "--method", "stack", "--no-report", "-q")
    return out / "model", seconds


def _compress(
    model: Path, data: Path, out: Path, methods: str, *sets: str
) -> tuple[list[dict], float]:
    seconds = float("nan")
    if not (out / "compress.json").is_file() or not _complete(out, methods):
        args = ["compress", str(model), str(data), "-o", str(out), "--methods", methods]
        seconds = _run(*args, "-q", "--overwrite", *(x for s in sets for x in ("--set", s)))
    doc = json.loads((out / "compress.json").read_text())
    return doc["results"], seconds


def _complete(out: Path, methods: str) -> bool:
    doc = json.loads((out / "compress.json").read_text())
    return len(doc["results"]) == 1 + len(methods.split(","))


def _row(label: str, r: dict, base: dict, seconds: float) -> str:
    low, high = r["accuracy_ci"]
    return (
        f"| {label} | {100 * r['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}] | "
        f"{r['images_per_s']:.1f} | {r['images_per_s'] / base['images_per_s']:.2f}x | "
        f"{r['size_bytes'] / 1e6:.1f} | {(r['backbone_bytes'] or 0) / 1e6:.1f} | {seconds:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/headstart-compress-bench"))
    parser.add_argument("--teacher", choices=("stack", "fusion"), default="stack")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="config override for pruning's recovery and distillation, e.g. train.epochs=3",
    )
    args = parser.parse_args()
    data, work = args.data, args.work
    if not data.is_dir():
        sys.exit(f"{data} not found: pass --data (clothing_small from the shared data)")
    work.mkdir(parents=True, exist_ok=True)

    probe_s = _fit(data, work / "probe-mobilenet_v2", "-b", "mobilenet_v2")
    teacher, teacher_s = _teacher(data, work, args.teacher)
    tuned_s = _fit(data, work / "finetuned-mobilenet_v2", "--strategy", "finetune")
    int8, int8_s = _compress(work / "probe-mobilenet_v2" / "model", data, work / "c-int8", "int8")
    tuned = work / "finetuned-mobilenet_v2" / "model"
    pruned, prune_s = _compress(tuned, data, work / "c-prune", "prune:0.3", *args.sets)
    distilled, distill_s = _compress(
        teacher, data, work / "c-distill", "distill:mobilenet_v2", *args.sets
    )

    print("\n| model | accuracy % [95% CI] | images/s | speed | ONNX MB | backbone MB | wall s |")
    print("|---|---|---|---|---|---|---|")
    print(_row("mobilenet_v2 probe, fp32 ONNX", int8[0], int8[0], probe_s))
    print(_row("… static int8", int8[1], int8[0], int8_s))
    print(_row("mobilenet_v2 fine-tuned", pruned[0], pruned[0], tuned_s))
    print(_row("… 30% channels pruned + recovery", pruned[1], pruned[0], prune_s))
    print(_row(f"teacher ({args.teacher})", distilled[0], distilled[0], teacher_s))
    print(_row("… distilled mobilenet_v2 student", distilled[1], distilled[0], distill_s))
    print("\nspeed: against the row's original; every figure on the same test images.")

    def pts(a: dict, b: dict) -> float:
        return 100 * (a["accuracy"] - b["accuracy"])

    speed = int8[1]["images_per_s"] / int8[0]["images_per_s"]
    print("\n| target | measured | met |")
    print("|---|---|---|")
    loss = -pts(int8[1], int8[0])
    print(f"| int8 ≥ 2x images/s, ≤ 1 point loss | {speed:.2f}x, {loss:+.1f} | "
          f"{'yes' if speed >= 2 and loss <= 1 else 'no'} |")  # fmt: skip
    gap, gain = pts(distilled[0], distilled[1]), pts(distilled[1], int8[0])
    print(f"| student within 1.5 of teacher, ≥ 2 above the probe | {gap:.1f} below, "
          f"{gain:+.1f} | {'yes' if gap <= 1.5 and gain >= 2 else 'no'} |")  # fmt: skip
    speed = pruned[1]["images_per_s"] / pruned[0]["images_per_s"]
    loss = -pts(pruned[1], pruned[0])
    print(f"| prune 30% ≥ 1.3x, ≤ 2 points loss | {speed:.2f}x, {loss:+.1f} | "
          f"{'yes' if speed >= 1.3 and loss <= 2 else 'no'} |")  # fmt: skip
    doc = json.loads((work / "c-int8" / "compress.json").read_text())
    print(f"\nmachine: {doc['machine']}; {doc['n_images']} {doc['split']} images")


if __name__ == "__main__":
    main()
