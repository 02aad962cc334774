"""Start-up of the command line, timed as a user times it: whole processes, from the shell.

    python benchmarks/startup.py [--repeat 5]

Rows: ``headstart --help``, ``headstart fit --help``, ``headstart backbones`` and ``headstart
predict MODEL PHOTO`` (a probe bundle fitted once on the bundled demo photos, its ONNX backbone
and embedding cache warm), beside the floors a Python program cannot go under: the interpreter
alone, and importing numpy, scikit-learn and torch.  Median and min of ``--repeat`` runs, in
seconds, with the machine's load average.  Targets (issue 9): ``--help`` under 0.5 s and
``backbones`` under 1.5 s on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADSTART = [sys.executable, "-m", "headstart.cli.main"]


def _time(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        runs.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return statistics.median(runs), min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HEADSTART_CACHE": str(Path(tmp) / "cache")}
        from headstart.demo import demo_data_dir

        demo = demo_data_dir()
        run = Path(tmp) / "run"
        subprocess.run(
            [*HEADSTART, "fit", str(demo), "-o", str(run), "-q", "--no-report"],
            env=env, capture_output=True, check=True,
        )  # fmt: skip
        photo = str(sorted((demo / "test" / "hat").glob("*.jpg"))[0])
        predict = [*HEADSTART, "predict", str(run / "model"), photo]
        subprocess.run(predict, env=env, capture_output=True, check=True)  # warm ONNX export
        rows = [
            ("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"]),
            ("python -c 'import numpy'", [sys.executable, "-c", "import numpy"]),
            ("python -c 'import sklearn.linear_model'",
             [sys.executable, "-c", "import sklearn.linear_model"]),
            ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
            ("headstart --help", [*HEADSTART, "--help"]),
            ("headstart fit --help", [*HEADSTART, "fit", "--help"]),
            ("headstart backbones", [*HEADSTART, "backbones"]),
            ("headstart predict MODEL PHOTO", predict),
        ]  # fmt: skip
        print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, {args.repeat} runs")
        print("| command | median s | min s |")
        print("|---|---:|---:|")
        for name, argv in rows:
            median, best = _time(argv, env, args.repeat)
            print(f"| {name} | {median:.2f} | {best:.2f} |", flush=True)


if __name__ == "__main__":
    main()
