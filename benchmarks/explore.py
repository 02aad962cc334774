"""Evidence for ``headstart explore`` (and the out-of-distribution score) on the shared data.

    python benchmarks/explore.py [--data-root ../shared/data] [--out /tmp/explore-bench]

One run, four measurements, each against what a perfect tool would find:

1. label issues: 5% of clothing_small's training images get a wrong label (seeded, uniformly
   among the other classes), written as a CSV beside the untouched images.  With m flipped
   images: recall of the top 2m ranked rows of label_issues.csv, precision of the top m, and
   precision / recall of the rows confident learning flags.  (The data's own label noise counts
   against precision: those rows are not "flipped".)
2. outliers: 30 hymenoptera photos (seeded) put into clothing_small's training classes: how
   many are in the top 50 of outliers.csv.
3. clusters: clothing_small without its labels: NMI / ARI / purity of each method against the
   true classes.
4. time: ``headstart explore clothing_small -o OUT`` from the shell with a warm embedding cache
   (start-up, analysis, CSVs and map.html included), best of two.
5. OOD: a probe fitted on clothing_small, hymenoptera's images as the unseen data; the in-data
   side is clothing_small's test split: AUROC and the false-positive rate at 95% TPR.

Embeddings come from ``$HEADSTART_CACHE`` (the first run fills it).  Prints markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def _images(folder: Path) -> list[tuple[Path, str, str]]:
    """(path, class, split) of every image of a split/class tree."""
    rows = []
    for split_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        split = "val" if split_dir.name == "validation" else split_dir.name
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in {".jpg", ".jpeg", ".png"}:
                    rows.append((path, class_dir.name, split))
    return rows


def _write_csv(path: Path, rows: list[tuple[Path, str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"])
        writer.writerows([str(p), label, split] for p, label, split in rows)
    return path


def _ranked(csv_path: Path, column: str = "path") -> list[str]:
    with csv_path.open(newline="") as fh:
        return [row[column] for row in csv.DictReader(fh)]


def label_issue_rows(root: Path, out: Path, seed: int) -> list[str]:
    from headstart.explore.run import explore

    rows = _images(root / "clothing_small")
    classes = sorted({c for _, c, _ in rows})
    rng = random.Random(seed)
    train = [i for i, (_, _, s) in enumerate(rows) if s == "train"]
    flipped = set(rng.sample(train, round(0.05 * len(train))))
    noisy = [
        (p, rng.choice([k for k in classes if k != c]) if i in flipped else c, s)
        for i, (p, c, s) in enumerate(rows)
    ]
    data = _write_csv(out / "flipped" / "labels.csv", noisy)
    found = explore(data, out / "flipped" / "explore", progress=False, page=False)
    truth = {str(rows[i][0]) for i in flipped}
    ranked = [str(found.paths[i]) for i in np.argsort(-np.nan_to_num(found.label_issue_score))]
    flagged = [str(found.paths[i]) for i in found.label_issues]
    m = len(truth)
    hits = lambda paths: sum(p in truth for p in paths)  # noqa: E731
    return [
        "| flipped | recall in top 2m | precision in top m | flagged | flagged precision "
        "| flagged recall |",
        "|---|---|---|---|---|---|",
        f"| {m} of {len(train)} train | {100 * hits(ranked[: 2 * m]) / m:.1f}% "
        f"| {100 * hits(ranked[:m]) / m:.1f}% | {len(flagged)} "
        f"| {100 * hits(flagged) / max(len(flagged), 1):.1f}% | {100 * hits(flagged) / m:.1f}% |",
    ]


def outlier_rows(root: Path, out: Path, seed: int) -> list[str]:
    from headstart.explore.run import explore

    rows = _images(root / "clothing_small")
    classes = sorted({c for _, c, _ in rows})
    rng = random.Random(seed)
    strays = rng.sample([p for p, _, _ in _images(root / "hymenoptera")], 30)
    mixed = rows + [(p, rng.choice(classes), "train") for p in strays]
    data = _write_csv(out / "strays" / "labels.csv", mixed)
    found = explore(data, out / "strays" / "explore", progress=False, page=False)
    top = [str(found.paths[i]) for i in np.argsort(-found.outlier_score)[:50]]
    caught = sum(str(p) in top for p in strays)
    return [
        "| strays | in top 50 outliers | share |",
        "|---|---|---|",
        f"| 30 hymenoptera in {len(rows)} clothing | {caught} | {100 * caught / 30:.0f}% |",
    ]


def cluster_rows(root: Path, out: Path) -> tuple[list[str], float]:
    command = [str(Path(sys.executable).with_name("headstart")), "explore"]
    command += [str(root / "clothing_small"), "-o", str(out / "clusters"), "-q"]
    seconds = []
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - t0)
    summary = json.loads((out / "clusters" / "summary.json").read_text())
    lines = ["| method | k | NMI | ARI | purity |", "|---|---|---|---|---|"]
    for method, s in summary["cluster_metrics"].items():
        lines.append(
            f"| {method} | {s.get('k', float('nan')):.0f} | {s['nmi']:.3f} | {s['ari']:.3f} "
            f"| {s['purity']:.3f} |"
        )
    return lines, min(seconds)


def ood_rows(root: Path, out: Path) -> list[str]:
    import headstart
    from headstart.stats import ood_metrics

    fitted = out / "ood-fit"
    if not (fitted / "model" / "model.json").is_file():
        headstart.fit(root / "clothing_small", fitted, progress=False, report=False)
    model = headstart.load(fitted / "model")
    inside = [p for p, _, s in _images(root / "clothing_small") if s == "test"]
    outside = [p for p, _, _ in _images(root / "hymenoptera")]
    scores_in, _ = model.ood_scores(inside)
    scores_out, _ = model.ood_scores(outside)
    keep_in, keep_out = scores_in[~np.isnan(scores_in)], scores_out[~np.isnan(scores_out)]
    m = ood_metrics(keep_in, keep_out, threshold=model.ood_threshold)
    return [
        "| in-data (test) | unseen | AUROC (95% CI) | FPR at 95% TPR | in passing | out flagged |",
        "|---|---|---|---|---|---|",
        f"| clothing_small ({m.n_in}) | hymenoptera ({m.n_out}) "
        f"| {m.auroc.value:.3f} [{m.auroc.low:.3f}, {m.auroc.high:.3f}] "
        f"| {100 * m.fpr_at_95_tpr.value:.1f}% | {100 * (m.in_passed or 0):.1f}% "
        f"| {100 * (m.out_flagged or 0):.1f}% |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--out", type=Path, default=Path("/tmp/explore-bench"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HEADSTART_OFFLINE", "1")
    print(f"CPU capability: {_capability()}\n")
    print("## Label issues (clothing_small, 5% of train flipped)\n")
    print("\n".join(label_issue_rows(args.data_root, args.out, args.seed)) + "\n")
    print("## Outliers (30 hymenoptera photos in clothing_small)\n")
    print("\n".join(outlier_rows(args.data_root, args.out, args.seed)) + "\n")
    lines, seconds = cluster_rows(args.data_root, args.out)
    print("## Clusters without labels (clothing_small)\n")
    print("\n".join(lines) + "\n")
    print(f"`headstart explore clothing_small` (warm cache, map included): {seconds:.1f} s\n")
    print("## Out-of-distribution (probe on clothing_small)\n")
    print("\n".join(ood_rows(args.data_root, args.out)) + "\n")


def _capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


if __name__ == "__main__":
    main()
