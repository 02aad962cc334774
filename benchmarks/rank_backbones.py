"""How well each transferability score ranks the backbones usable here, against the probe.

For each shared data set: every score and the logistic probe's val accuracy per backbone (all
backbones probed), whether each score picks the probe's winner, and Kendall's tau between each
score and the probe accuracy across all (data set, backbone) pairs.  Time: scoring all
backbones (embeddings cached) against one probe fit per backbone.

    .venv/bin/python benchmarks/rank_backbones.py [DATA_ROOT]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from headstart.config import load_config
from headstart.ranking import SCORES, rank_backbones

DATASETS = ("hymenoptera", "clothing_small", "sign_language_digits")


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared/data"
    cfg = load_config()
    pairs: list[tuple[str, str, dict[str, float], float]] = []
    agree: dict[str, list[bool]] = {s: [] for s in (*SCORES, "combined")}
    head = " | ".join(SCORES)
    print(f"| data set | backbone | {head} | probe val acc | score s | probe s |")
    print("|---" * (len(SCORES) + 5) + "|")
    for name in DATASETS:
        ranking = rank_backbones(root / name, cfg, top=99)
        best_probe = max(ranking.rows, key=lambda r: r.probe_score or 0.0).backbone
        for row in ranking.rows:
            score_s = sum(row.seconds.values())
            cells = " | ".join(f"{row.scores[s]:.4f}" for s in SCORES)
            print(
                f"| {name} | {row.backbone} | {cells} | {row.probe_score:.4f} | "
                f"{score_s:.2f} | {row.probe_seconds:.2f} |"
            )
            pairs.append((name, row.backbone, row.scores, row.probe_score or 0.0))
        for s in SCORES:
            top = max(ranking.rows, key=lambda r: r.scores[s]).backbone
            agree[s].append(top == best_probe)
        agree["combined"].append(ranking.rows[0].backbone == best_probe)
        total_probe = sum(r.probe_seconds or 0.0 for r in ranking.rows)
        total_score = sum(sum(r.seconds.values()) for r in ranking.rows)
        print(
            f"|   {name}: scoring all backbones {total_score:.2f} s vs one probe fit per "
            f"backbone {total_probe:.2f} s; rank-backbones in all {ranking.seconds:.1f} s |"
        )
    probe = np.array([p[3] for p in pairs])
    print("\n| score | picks the probe's best (per data set) | Kendall tau vs probe acc |")
    print("|---|---|---|")
    for s in (*SCORES, "combined"):
        flags = ", ".join("yes" if a else "no" for a in agree[s])
        if s == "combined":
            print(f"| mean rank of RANKING_SCORES | {flags} | - |")
            continue
        tau = kendalltau([p[2][s] for p in pairs], probe).statistic
        print(f"| {s} | {flags} | {tau:.2f} |")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
