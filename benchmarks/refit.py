"""The embedding cache at work: a first ``headstart fit`` against a second one on the same folder.

    python benchmarks/refit.py [--data ../shared/data/clothing_small]

Runs the ``headstart`` command twice in fresh processes (as a user would, imports included) with a
fresh cache: the first fit embeds every image, the second finds them all cached. Prints wall
seconds of each, where the time went, the ratio, and the test accuracy of both (they must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from headstart.runfolder import RunFolder
from headstart.stats import headline

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "clothing_small"


def timed_fit(data: Path, out: Path, env: dict[str, str]) -> tuple[float, dict[str, object]]:
    cmd = [sys.executable, "-m", "headstart.cli.main", "fit", str(data), "-o", str(out), "-q"]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    run = json.loads((out / "run.json").read_text())
    metrics = RunFolder(out).read_metrics()  # split -> task -> metrics
    split = "test" if "test" in metrics else "val"
    first = next(iter(metrics[split].values()))  # class folders: the one task, "label"
    return seconds, {**run, "accuracy": headline(first)[1].value, "split": split}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HEADSTART_CACHE": str(Path(tmp) / "cache")}
        first_s, first = timed_fit(args.data, Path(tmp) / "first", env)
        second_s, second = timed_fit(args.data, Path(tmp) / "second", env)
    print(f"data {args.data}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'run':<8}{'wall s':>9}{'embedded':>10}{'cached':>8}  steps (s){'':<28}{'accuracy':>9}")
    for name, secs, run in (("first", first_s, first), ("second", second_s, second)):
        ex = run["extraction"]
        steps = ", ".join(f"{k} {v:.1f}" for k, v in run["timings_s"].items())  # type: ignore[attr-defined]
        print(
            f"{name:<8}{secs:>9.1f}{ex['computed']:>10}{ex['cached']:>8}  {steps:<37}"  # type: ignore[index]
            f"{run['accuracy']:>9.3f}"
        )
    print(
        f"second fit is {first_s / second_s:.1f}x faster ({first['split']} accuracy equal: "
        f"{first['accuracy'] == second['accuracy']})"
    )


if __name__ == "__main__":
    main()
