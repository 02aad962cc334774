"""Presets, backbones, fusion and ensembles against the probe a user writes by hand, on the
same held-out images, in one run.

    python benchmarks/presets.py [--data-root ../shared/data] [--sets hymenoptera,...]
                                 [--time-limit 20m] [--skip-presets]

Per data set (held-out split: test, else val; unsplit data: headstart's seeded 15% test):

- hand: StandardScaler + scikit-learn LogisticRegression(max_iter=2000) on mobilenet_v2
  embeddings, trained on the same images as headstart's probe;
- probe BACKBONE: headstart's probe on each offline backbone; fusion: on all of them;
- vote / select / stack: the ensembles of those candidates (headstart.ensemble);
- preset fast|balanced|best: ``headstart fit DATA --preset P --time-limit T`` from the shell,
  timed whole (start-up included); ``best`` runs first on a fresh embedding cache (what a new
  user meets), the others after it (warm).

Prints a markdown table: accuracy with its 95% bootstrap interval (%), and wall seconds.
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

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from headstart.backbones import resolve_backbone
from headstart.backbones.spec import fuse
from headstart.cache import CacheRoot
from headstart.config import load_config
from headstart.embedding import embed_data, scan_data
from headstart.ensemble import combine, ensemble_result, layout, probe_member
from headstart.probe import held_out_split
from headstart.stats import evaluate_predictions

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = ("hymenoptera", "clothing_small", "sign_language_digits")
BACKBONES = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _cell(truth: list[str], predicted: list[str], classes: list[str]) -> str:
    m = evaluate_predictions(truth, predicted, classes, n_boot=1000)
    a = m.accuracy
    return f"{100 * a.value:.1f} [{100 * a.low:.1f}, {100 * a.high:.1f}]"


def components(name: str, data: Path) -> list[str]:
    """The library rows: hand-written probe, each backbone, fusion, each ensemble method."""
    cfg = load_config()
    cache = CacheRoot.for_config(cfg)
    manifest = scan_data(data, cfg, carve_val=False)
    rows_out: list[str] = []
    features, members, refs = {}, [], []
    embedded = None
    for backbone in BACKBONES:
        ref = resolve_backbone(backbone)
        t0 = time.perf_counter()
        got = embed_data(manifest, cfg, progress=False, ref=ref)
        manifest = got.manifest
        if embedded is None:
            embedded = got
        held = held_out_split(got)
        train = [i for i, s in enumerate(manifest.samples) if s.split != held]
        test = manifest.rows(held)
        truth = [manifest.samples[i].labels["label"][0] for i in test]
        classes = list(manifest.targets[0].classes)
        if backbone == "mobilenet_v2":
            y = [manifest.samples[i].labels["label"][0] for i in train]
            hand = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            t1 = time.perf_counter()
            hand.fit(got.features[train], y)
            pred = list(hand.predict(got.features[test]))
            rows_out.append(
                f"| {name} | hand-written LogisticRegression (mobilenet_v2) | "
                f"{_cell(truth, pred, classes)} | {time.perf_counter() - t1:.1f} (fit only) |"
            )
        member = probe_member(backbone, ref, got.features, manifest, train, cfg, cache)
        member.seconds = time.perf_counter() - t0
        members.append(member)
        features[ref.weights_sha256] = got.features
        refs.append(ref)
    fused = fuse(refs)
    t0 = time.perf_counter()
    X = np.hstack([features[r.weights_sha256] for r in refs])
    members.append(probe_member(fused.name, fused, X, manifest, train, cfg, cache))
    members[-1].seconds = time.perf_counter() - t0
    for member in members:
        proba = member.heads["label"].predict_proba(
            np.hstack([features[p.weights_sha256] for p in member.ref.members])[test]
        )
        pred = [str(member.heads["label"].classes_[j]) for j in proba.argmax(axis=1)]
        rows_out.append(
            f"| {name} | probe {member.ref.name} | {_cell(truth, pred, classes)} | "
            f"{member.seconds:.1f} |"
        )
    ref, slices = layout(members)
    for method in ("vote", "select", "stack"):
        t0 = time.perf_counter()
        combined = combine(members, slices, method, manifest, train)
        result = ensemble_result(
            Path(tempfile.mkdtemp()), manifest, train, held, members, ref, combined, features, cfg
        )
        proba = result.probabilities[held]["label"]
        pred = [classes[j] for j in proba.argmax(axis=1)]
        rows_out.append(
            f"| {name} | ensemble {method} (5 candidates) | {_cell(truth, pred, classes)} | "
            f"{time.perf_counter() - t0:.1f} (combine only) |"
        )
    return rows_out


def preset_row(name: str, data: Path, preset: str, limit: str, cache: Path) -> str:
    out = Path(tempfile.mkdtemp()) / "run"
    env = {**os.environ, "HEADSTART_CACHE": str(cache)}
    exe = str(Path(sys.executable).with_name("headstart"))  # the venv's, activated or not
    cmd = [exe, "fit", str(data), "-o", str(out), "-q", "--no-report", "--preset", preset]
    cmd += ["--time-limit", limit] if preset != "fast" else []
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return f"| {name} | preset {preset} | failed: {done.stderr.strip()[-200:]} | {wall:.0f} |"
    metrics = json.loads((out / "metrics.json").read_text())
    split = "test" if "test" in metrics else "val"
    acc = metrics[split]["tasks"]["label"]["accuracy"]
    chosen = ""
    if (out / "ensemble.json").exists():
        chosen = f" -> {json.loads((out / 'ensemble.json').read_text()).get('chosen')}"
    return (
        f"| {name} | preset {preset}{chosen} | {100 * acc['value']:.1f} "
        f"[{100 * acc['low']:.1f}, {100 * acc['high']:.1f}] | {wall:.0f} (whole command) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--time-limit", default="20m")
    parser.add_argument("--skip-presets", action="store_true")
    parser.add_argument("--presets", default="best,balanced,fast")
    parser.add_argument("--skip-components", action="store_true")
    args = parser.parse_args()
    print("| data | model | held-out accuracy % [95% CI] | seconds |")
    print("|---|---|---|---|")
    fresh = Path(tempfile.mkdtemp(prefix="hs-preset-cache-"))
    for name in args.sets.split(","):
        data = args.data_root / name
        if not data.is_dir():
            print(f"| {name} | skipped: {data} not found | | |")
            continue
        if not args.skip_presets:
            for preset in args.presets.split(","):
                print(preset_row(name, data, preset, args.time_limit, fresh), flush=True)
        for row in [] if args.skip_components else components(name, data):
            print(row, flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
