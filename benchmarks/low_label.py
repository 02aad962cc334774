"""Few labels, many unlabelled images: the labelled-only probe against ``fit --unlabelled``.

    python benchmarks/low_label.py [--data-root ../shared/data] [--data clothing_small]
                                   [--per-class 10] [--seeds 3] [--ssl BACKBONE_FOLDER]

Per seed, ``--per-class`` labelled images per class are drawn (seeded) from the data's train
split; the rest of train is handed over as unlabelled images (a CSV of paths); both models are
scored on the data's test split (never seen, never unlabelled).  Unsplit data
(sign_language_digits): a seeded stratified 15% is the test split first.  Columns: test
accuracy (%) of the labelled-only probe (``headstart fit``) and of the semi-supervised probe
(``headstart fit --unlabelled``), mean and standard deviation over seeds, the method chosen
and the pseudo-labels used per seed, and the mean wall seconds of each fit (embeddings from
the cache after the first seed: point ``$HEADSTART_CACHE`` at an empty folder for the cold
cost of the first).

``--ssl FOLDER`` adds the self-supervised columns: the same two fits on a backbone adapted by
``headstart pretrain`` (labels ignored) to the data's training images, e.g.

    headstart pretrain ../shared/data/clothing_small/train -b mobilenet_v2 -o ssl-clothing \
        --time-limit 30m --image-size 128

Pretrain on the train split only (never the test split); its wall time is printed by that
command, not counted here.

``--student BACKBONE`` adds the noisy-student columns: the semi-supervised probe is the teacher
of ``headstart distill`` (the student network fine-tuned on the teacher's soft targets for the
labelled and the unlabelled images, with augmentation), beside the same network fine-tuned on
the labelled images only (so that the gain of fine-tuning and the gain of the unlabelled images
are told apart).  ``--set KEY=VALUE`` (repeatable) sets the students' recipe, e.g.
``--set train.epochs=3``.
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import headstart
from headstart.config import load_config
from headstart.data import scan
from headstart.finetune.distill import distill
from headstart.result import FitResult
from headstart.stats import Metrics

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _draw(data: Path, per_class: int, seed: int, folder: Path) -> tuple[Path, Path]:
    """The labelled CSV (``per_class`` train images per class + the test split) and the
    unlabelled CSV (the rest of train)."""
    manifest = scan(data, val_fraction=0.0, test_fraction=0.15, seed=0)
    by_class: dict[str, list[str]] = defaultdict(list)
    for s in manifest.split("train"):
        by_class[s.labels["label"][0]].append(str(s.path))
    rng = random.Random(seed)
    labelled, unlabelled = [], []
    for label, paths in sorted(by_class.items()):
        chosen = set(rng.sample(sorted(paths), per_class))
        labelled += [{"path": p, "label": label, "split": "train"} for p in sorted(chosen)]
        unlabelled += [{"path": p} for p in sorted(paths) if p not in chosen]
    labelled += [
        {"path": str(s.path), "label": s.labels["label"][0], "split": "test"}
        for s in manifest.split("test")
    ]
    return _write(folder / f"labelled{seed}.csv", labelled), _write(
        folder / f"unlabelled{seed}.csv", unlabelled
    )


def _accuracy(result: FitResult) -> float:
    m = result.metrics["test"]["label"]
    assert isinstance(m, Metrics)
    return 100 * m.accuracy.value


def _fit(
    labelled: Path,
    out: Path,
    unlabelled: Path | None,
    backbone: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> tuple[float, float, str]:
    extra = [f"backbone.name={backbone}"] if backbone is not None else []
    cfg = load_config(overrides=["eval.n_boot=0", *extra, *overrides])
    t0 = time.perf_counter()
    result = headstart.fit(
        labelled, out, config=cfg, progress=False, report=False, unlabelled=unlabelled
    )
    seconds = time.perf_counter() - t0
    semi = (result.semi_supervised or {}).get("tasks", {}).get("label")
    note = "" if semi is None else f"{semi['chosen']} ({semi['pseudo_labels']})"
    return _accuracy(result), seconds, note


def _distill(
    teacher: Path,
    labelled: Path,
    unlabelled: Path,
    out: Path,
    student: str,
    overrides: Sequence[str],
) -> tuple[float, float, str]:
    cfg = load_config(overrides=["eval.n_boot=0", *overrides])
    t0 = time.perf_counter()
    result = distill(
        teacher, labelled, cfg, out, student=student, unlabelled=unlabelled, progress=False
    )
    seconds = time.perf_counter() - t0
    images = (result.distill or {}).get("images", {})
    return _accuracy(result), seconds, f"{images.get('unlabelled', 0)} unlabelled images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--data", default="clothing_small")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ssl", type=Path, default=None, help="a headstart pretrain folder")
    parser.add_argument("--student", default=None, help="a backbone to distil the semi into")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    runs: list[tuple[str, bool, Path | None]] = [
        ("labelled only", False, None),
        ("semi-supervised", True, None),
    ]
    if args.ssl is not None:
        runs += [("SSL-adapted, labelled only", False, args.ssl), ("SSL + semi", True, args.ssl)]
    scores: dict[str, list[float]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for seed in range(args.seeds):
            labelled, unlabelled = _draw(args.data_root / args.data, args.per_class, seed, folder)
            for name, semi, backbone in runs:
                pool = unlabelled if semi else None
                acc, sec, note = _fit(labelled, folder / f"{name}{seed}", pool, backbone)
                scores[name].append(acc)
                seconds[name].append(sec)
                if note:
                    notes.append(f"{name}, seed {seed}: {note}")
                print(f"seed {seed} {name}: {acc:.1f}% in {sec:.1f} s {note}", flush=True)
            if args.student is not None:
                student = [f"fine-tuned {args.student}, labelled only", "semi -> distilled student"]
                finetune = ["strategy.kind=finetune", *args.overrides]
                results = [
                    _fit(labelled, folder / f"ft{seed}", None, args.student, finetune),
                    _distill(
                        folder / f"semi-supervised{seed}",
                        labelled,
                        unlabelled,
                        folder / f"student{seed}",
                        args.student,
                        args.overrides,
                    ),
                ]
                for name, (acc, sec, note) in zip(student, results, strict=True):
                    scores[name].append(acc)
                    seconds[name].append(sec)
                    print(f"seed {seed} {name}: {acc:.1f}% in {sec:.1f} s {note}", flush=True)
    print()
    print(f"{args.data}, {args.per_class} labelled images per class, {args.seeds} seeds")
    print()
    print("| model | test accuracy % (mean ± sd) | per seed | wall s (mean) |")
    print("|---|---|---|---|")
    for name in scores:
        a = np.asarray(scores[name])
        per_seed = ", ".join(f"{v:.1f}" for v in a)
        print(
            f"| {name} | {a.mean():.1f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.1f} "
            f"| {per_seed} | {np.mean(seconds[name]):.1f} |"
        )
    print()
    print("chosen (pseudo-labels used): " + "; ".join(notes))


if __name__ == "__main__":
    main()
