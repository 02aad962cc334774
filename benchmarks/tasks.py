"""Multi-label and two-task classification on composites of a real data set, end to end.

Builds side-by-side pairs of photos from a class-folder data set (``headstart.data.compose``),
then fits, evaluates and predicts: a multi-label probe on ``items``, a two-task probe on
``[left, items]``, and (``--finetune-epochs N``) a two-task fine-tune on a subset.  The baseline
for the multi-label task is the same probe's single-label view: a softmax head on ``left``
alone, which can only ever name one item per picture.

    .venv/bin/python benchmarks/tasks.py /work/shared/data/clothing_small --per-image 1.0
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import headstart
from headstart.config import load_config
from headstart.data.compose import compose_pairs
from headstart.runfolder import MetricsRecord
from headstart.stats import MultiLabelMetrics, headline


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _subset(labels: Path, train_fraction: float) -> Path:
    rows = list(csv.reader(labels.open()))
    keep = [rows[0]]
    for i, row in enumerate(rows[1:]):
        if row[1] != "train" or (i % round(1 / train_fraction)) == 0:
            keep.append(row)
    out = labels.with_name("subset.csv")
    with out.open("w", newline="") as fh:
        csv.writer(fh).writerows(keep)
    return out


def _run(data: Path, out: Path, overrides: list[str], strategy: str) -> tuple[MetricsRecord, float]:
    """Fit one run; its metrics (split -> task -> metrics) and wall seconds."""
    cfg = load_config(overrides=overrides)
    t0 = time.perf_counter()
    result = headstart.fit(data, out, config=cfg, strategy=strategy, progress=False, report=True)
    return result.metrics, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--per-image", type=float, default=1.0)
    parser.add_argument("--finetune-epochs", type=int, default=0)
    parser.add_argument("--finetune-train-fraction", type=float, default=0.25)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tasks-bench-"))
    t0 = time.perf_counter()
    labels = compose_pairs(args.data, work / "pairs", per_image=args.per_image)
    n = sum(1 for _ in labels.open()) - 1
    print(f"{n} composites in {time.perf_counter() - t0:.1f} s under {work}")
    runs = [
        ("softmax on left only (baseline)", labels, ["data.label_column=left"], "probe"),
        ("multi-label probe on items", labels, ["data.label_column=items"], "probe"),
        ("two-task probe [left, items]", labels, ["data.label_column=[left,items]"], "probe"),
    ]
    if args.finetune_epochs:
        subset = _subset(labels, args.finetune_train_fraction)
        ft = ["data.label_column=[left,items]", f"train.epochs={args.finetune_epochs}"]
        runs.append(("two-task probe, train subset", subset, ft[:1], "probe"))
        runs.append(
            (f"two-task fine-tune {args.finetune_epochs} ep, subset", subset, ft, "finetune")
        )
    print(f"load {os.getloadavg()[0]:.1f}")
    print("| run | task | test metric | value [95% CI] | macro-F1 | seconds |")
    print("|---|---|---|---|---|---|")
    for i, (name, data, overrides, strategy) in enumerate(runs):
        metrics, seconds = _run(data, work / f"run{i}", overrides, strategy)
        column = overrides[0].split("=", 1)[1]
        for task, m in metrics["test"].items():
            # one label column is the task "label" whatever its name: show the column
            shown = column if len(metrics["test"]) == 1 else task
            key = "mean_ap" if isinstance(m, MultiLabelMetrics) else "accuracy"
            v = headline(m)[1]
            print(
                f"| {name} | {shown} | {key} | {_pct(v.value)} [{_pct(v.low)}, {_pct(v.high)}] "
                f"| {_pct(m.macro_f1.value)} | {seconds:.0f} |"
            )
    model = headstart.load(work / "run2" / "model")  # the two-task probe
    photo = sorted((work / "pairs" / "test").glob("*.jpg"))[0]
    (p,) = model.predict([photo])
    print(f"predict {photo.name}: " + "; ".join(f"{t}: {a.labels}" for t, a in p.tasks.items()))
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
