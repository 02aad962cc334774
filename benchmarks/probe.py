"""The default probe before and after "the probe uses all the labelled data it may", against the
probe a user writes by hand, on the same held-out images.

    python benchmarks/probe.py [--data-root ../shared/data] [--demo]

For each data set (hymenoptera, clothing_small, sign_language_digits; with --demo also the
bundled demo photos), one table row per model, all scored on the data's held-out split (test,
else val) as ``headstart fit`` chooses it (unsplit data: a seeded stratified 15% test split, the
same with or without a val split carved beside it):

- before: the head fitted on train only (15% val carved where the data has none), its C chosen
  by 3-fold CV accuracy, no calibration (headstart <= 0.1's probe);
- after: ``headstart.fit`` as it is now (heads on every non-held-out image, C by CV, a
  temperature fitted on out-of-fold probabilities);
- plain: StandardScaler + scikit-learn LogisticRegression(C=1, max_iter=2000) on the same
  embeddings, trained on the same images as "after".

Embeddings come from the cache (``$HEADSTART_CACHE``); the heads are fitted fresh.  Prints a
markdown table: accuracy with its 95% bootstrap interval and ECE (15 bins), in %.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import headstart
from headstart.config import load_config
from headstart.embedding import embed_data, scan_data
from headstart.heads import LogisticHead
from headstart.stats import Metrics, evaluate_predictions

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = ("hymenoptera", "clothing_small", "sign_language_digits")


def _score(truth: list[str], proba: np.ndarray, classes: list[str]) -> Metrics:
    predicted = [classes[j] for j in proba.argmax(axis=1)]
    return evaluate_predictions(truth, predicted, classes, n_boot=1000, proba=proba)


def _row(name: str, model: str, trained: str, held: str, m: Metrics) -> str:
    a = m.accuracy
    return (
        f"| {name} | {model} | {trained} | {held} | {m.n} | {100 * a.value:.1f} "
        f"[{100 * a.low:.1f}, {100 * a.high:.1f}] | {100 * (m.ece or 0.0):.1f} |"
    )


def _labels(manifest: headstart.Manifest, rows: list[int]) -> list[str]:
    return [manifest.samples[i].labels["label"][0] for i in rows]


def measure(name: str, data: Path, out: Path) -> list[str]:
    cfg = load_config(overrides=["eval.n_boot=1000"])
    # before: scanned as fine-tuning scans (val carved), head on train only, no calibration
    before = embed_data(scan_data(data, cfg), cfg, progress=False)
    m = before.manifest
    held = "test" if "test" in m.splits_present() else "val"
    train = m.rows("train")
    head = LogisticHead().fit(before.features[train], _labels(m, train))
    classes = [str(c) for c in head.classes_]
    held_rows = m.rows(held)
    rows = [_row(name, "before (train only, no calibration)", "train", held,
                 _score(_labels(m, held_rows), head.predict_proba(before.features[held_rows]),
                        classes))]  # fmt: skip
    # after: headstart.fit as a user runs it
    result = headstart.fit(data, out / name, config=cfg, progress=False, report=False)
    after_m = result.manifest
    after = result.metrics[held]["label"]
    assert isinstance(after, Metrics)
    trained = "+".join(s for s in after_m.splits_present() if s != held)
    rows.append(_row(name, "after (headstart fit)", trained, held, after))
    cv = result.metrics.get("cv", {}).get("label")
    if isinstance(cv, Metrics):
        rows.append(_row(name, "after: its CV estimate", trained, "cv", cv))
    # plain: the hand-written probe on the images "after" trained on
    embedded = embed_data(after_m, cfg, progress=False)
    fit_rows = [i for i, s in enumerate(after_m.samples) if s.split != held]
    plain = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    plain.fit(embedded.features[fit_rows], _labels(after_m, fit_rows))
    test_rows = after_m.rows(held)
    proba = plain.predict_proba(embedded.features[test_rows])
    plain_m = _score(_labels(after_m, test_rows), proba, [str(c) for c in plain.classes_])
    rows.append(
        _row(name, "plain (StandardScaler + LogisticRegression C=1)", trained, held, plain_m)
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--demo", action="store_true", help="Also the bundled demo photos.")
    args = parser.parse_args()
    sets = [(name, args.data_root / name) for name in SETS]
    if args.demo:
        from headstart.demo import demo_data_dir

        sets.insert(0, ("demo", demo_data_dir()))
    print("| data | model | trained on | scored | n | accuracy % [95% CI] | ECE % |")
    print("|---|---|---|---|---:|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in sets:
            for row in measure(name, data, Path(tmp)):
                print(row, flush=True)


if __name__ == "__main__":
    main()
