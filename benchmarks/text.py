"""Text classification on banking77: headstart's rows against what a user writes by hand with the
same libraries, on the published test split, in one run.

    python benchmarks/text.py [--data ../shared/data/banking77] [--rows tfidf,hand,minilm,...]
                              [--epochs 3] [--draws 3] [--work DIR]

Every headstart row is one shell command, timed whole (start-up included), on an embedding cache
that starts empty in this run (``WORK/cache``; rows after the first MiniLM row find MiniLM's
embeddings cached, which the table says).  Training data: banking77's train.csv (10,003 texts);
scored: its test.csv (3,080 texts), joined into one CSV with a ``split`` column, which is how a
user hands headstart a data set with a fixed test split.

Rows:
- tfidf: ``headstart fit --strategy tfidf`` (word 1-2 + char 2-5 grams, linear head);
- hand: sentence-transformers ``encode`` + scikit-learn ``LogisticRegression(max_iter=2000)``,
  the script a user writes by hand (a Python process, timed whole);
- minilm / mpnet: ``headstart fit -b minilm-l6|mpnet-base`` (the probe; mpnet only where its
  wheels are installed);
- finetune: ``headstart fit --strategy finetune`` on MiniLM (``--epochs``);
- ensemble: ``headstart ensemble`` (stack) of the encoder probe runs above;
- few: the MiniLM probe trained on 10 labelled texts per class (``--draws`` seeded draws; mean and
  the spread of the draws), scored on the same test split.

Prints a markdown table: accuracy with its 95% bootstrap interval, wall seconds, and texts/s of
the embedding step where the row embeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77"
ROWS = ("tfidf", "hand", "minilm", "mpnet", "finetune", "ensemble", "few")
HEADSTART = [sys.executable, "-m", "headstart.cli.main"]

HAND = """
import csv, sys, time
import numpy as np
from sentence_transformers import SentenceTransformer
from sklearn.linear_model import LogisticRegression

rows = list(csv.DictReader(open(sys.argv[1], encoding="utf-8")))
train = [r for r in rows if r["split"] == "train"]
test = [r for r in rows if r["split"] == "test"]
model = SentenceTransformer(sys.argv[2], device="cpu")
t0 = time.perf_counter()
x_train = model.encode([r["text"] for r in train], batch_size=64)
x_test = model.encode([r["text"] for r in test], batch_size=64)
seconds = time.perf_counter() - t0
head = LogisticRegression(max_iter=2000).fit(x_train, [r["category"] for r in train])
predicted = head.predict(x_test)
print("|".join(predicted))
print(seconds)
"""


def joined_csv(data: Path, out: Path) -> Path:
    """train.csv + test.csv as one CSV with a split column."""
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category", "split"])
        for split in ("train", "test"):
            with (data / f"{split}.csv").open(newline="", encoding="utf-8") as src:
                for row in csv.DictReader(src):
                    writer.writerow([row["text"], row["category"], split])
    return out


def few_csv(full: Path, out: Path, per_class: int, seed: int) -> Path:
    """``per_class`` seeded training texts of each class, and the whole test split."""
    rows = list(csv.DictReader(full.open(encoding="utf-8")))
    by_class: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row["split"] == "train":
            by_class[row["category"]].append(row)
    rng = random.Random(seed)
    chosen = [r for label in sorted(by_class) for r in rng.sample(by_class[label], per_class)]
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "category", "split"])
        writer.writeheader()
        writer.writerows(chosen + [r for r in rows if r["split"] == "test"])
    return out


def shell(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run a command, return (wall seconds, stdout); a failure stops the benchmark."""
    t0 = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def run_fit(csv_path: Path, out: Path, env: dict[str, str], *extra: str) -> float:
    args = [*HEADSTART, "fit", str(csv_path), "--text-column", "text"]
    args += ["--label-column", "category", "-o", str(out), "--no-report", "--quiet", *extra]
    return shell(args, env)[0]


def test_accuracy(run: Path) -> tuple[float, float, float]:
    metrics = json.loads((run / "metrics.json").read_text())
    acc = metrics["test"]["tasks"]["label"]["accuracy"]
    return acc["value"], acc["low"], acc["high"]


def embed_rate(run: Path) -> str:
    info = json.loads((run / "run.json").read_text()).get("extraction") or {}
    if info.get("engine") == "tfidf" or not info:
        return "no encoder"
    computed, seconds = info.get("computed", 0), info.get("seconds", 0.0)
    if not computed:
        return f"cached ({info.get('cached', 0)})"
    return f"{computed / seconds:.0f}" if seconds else ""


def cell(acc: tuple[float, float, float]) -> str:
    return f"{100 * acc[0]:.1f} [{100 * acc[1]:.1f}, {100 * acc[2]:.1f}]"


def hand_row(joined: Path, work: Path, env: dict[str, str]) -> tuple[str, float, str]:
    from headstart.backbones.text import resolve_text_backbone
    from headstart.stats import evaluate_predictions

    script = work / "hand.py"
    script.write_text(HAND)
    folder = resolve_text_backbone("minilm-l6").text.folder  # type: ignore[union-attr]
    seconds, out = shell([sys.executable, str(script), str(joined), str(folder)], env)
    predicted_line, encode_s = out.strip().splitlines()[-2:]
    rows = [r for r in csv.DictReader(joined.open(encoding="utf-8")) if r["split"] == "test"]
    truth = [r["category"] for r in rows]
    classes = sorted({r["category"] for r in csv.DictReader(joined.open(encoding="utf-8"))})
    m = evaluate_predictions(truth, predicted_line.split("|"), classes, n_boot=1000)
    n = sum(1 for r in csv.DictReader(joined.open(encoding="utf-8")))
    rate = f"{n / float(encode_s):.0f}"
    return cell((m.accuracy.value, m.accuracy.low, m.accuracy.high)), seconds, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    if not (args.data / "train.csv").is_file():
        sys.exit(f"banking77 not found at {args.data}: pass --data")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        sys.exit(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="hs-text-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HEADSTART_CACHE": str(work / "cache")}
    joined = joined_csv(args.data, work / "banking77.csv")
    import torch

    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores; work {work}")
    table = ["| row | test accuracy % [95% CI] | wall s | texts/s embedded |", "|---|---|---|---|"]
    runs: list[Path] = []

    def fit_row(name: str, label: str, *extra: str) -> None:
        out = work / name
        seconds = run_fit(joined, out, env, "--overwrite", *extra)
        table.append(
            f"| {label} | {cell(test_accuracy(out))} | {seconds:.0f} | {embed_rate(out)} |"
        )
        print(table[-1], flush=True)
        runs.append(out)

    for row in rows:
        if row == "tfidf":
            fit_row("tfidf", "TF-IDF word+char, linear head", "--strategy", "tfidf")
        elif row == "hand":
            acc, seconds, rate = hand_row(joined, work, env)
            label = "hand-written: ST encode + LogisticRegression"
            table.append(f"| {label} | {acc} | {seconds:.0f} | {rate} |")
            print(table[-1], flush=True)
        elif row == "minilm":
            fit_row("minilm", "headstart probe, minilm-l6 (fresh cache)", "-b", "minilm-l6")
        elif row == "mpnet":
            try:
                from headstart.backbones.text import resolve_text_backbone

                resolve_text_backbone("mpnet-base")
            except Exception as exc:  # not installed: say so in the table
                table.append(f"| headstart probe, mpnet-base | skipped: {exc} | | |")
                continue
            fit_row("mpnet", "headstart probe, mpnet-base", "-b", "mpnet-base")
        elif row == "finetune":
            fit_row(
                "finetune",
                f"headstart fine-tuned minilm-l6, {args.epochs} epochs",
                "-b",
                "minilm-l6",
                "--strategy",
                "finetune",
                "--set",
                f"train.epochs={args.epochs}",
            )
            runs.pop()  # fine-tuned runs are not ensemble members (no out-of-fold predictions)
        elif row == "ensemble":
            members = [r for r in runs if r.name in ("minilm", "mpnet")]  # encoder probes
            if len(members) < 2:
                table.append("| ensemble | skipped: needs two probe rows | | |")
                continue
            out = work / "ensemble"
            seconds, _ = shell(
                [
                    *HEADSTART,
                    "ensemble",
                    *map(str, members),
                    "-o",
                    str(out),
                    "--method",
                    "stack",
                    "--overwrite",
                    "--no-report",
                    "--quiet",
                ],
                env,
            )
            names = "+".join(r.name for r in members)
            label = f"headstart ensemble (stack: {names})"
            table.append(f"| {label} | {cell(test_accuracy(out))} | {seconds:.0f} | |")
            print(table[-1], flush=True)
        elif row == "few":
            accs, times = [], []
            for seed in range(args.draws):
                path = few_csv(joined, work / f"few-{seed}.csv", 10, seed)
                out = work / f"few-{seed}"
                times.append(run_fit(path, out, env, "--overwrite", "-b", "minilm-l6"))
                accs.append(test_accuracy(out)[0])
            import statistics

            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            table.append(
                f"| headstart probe, minilm-l6, 10 labelled texts per class ({len(accs)} draws) "
                f"| {100 * statistics.mean(accs):.1f} ± {100 * spread:.1f} (sd of draws) "
                f"| {statistics.mean(times):.0f} | cached |"
            )
            print(table[-1], flush=True)
    print()
    print("\n".join(table))


if __name__ == "__main__":
    main()
