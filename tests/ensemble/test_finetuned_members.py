"""Seed ensembles of fine-tuned runs: each run's trained network is a member of its own (same
architecture, other weights), they vote, and what needs out-of-fold predictions (which a
network trained on the images cannot give) is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import headstart
from headstart.cache import CacheRoot
from headstart.cli.main import main
from headstart.ensemble.runs import ensemble_runs
from salt import copy_demo

pytestmark = pytest.mark.slow
TINY = "timm:test_efficientnet"


def test_fine_tuned_runs_of_two_seeds_vote(
    tiny_net: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    data = copy_demo(tmp_path / "data", ("hat", "shoes"), {"train": 8, "validation": 3, "test": 3})
    runs = []
    for seed in (1, 2):
        out = tmp_path / f"seed{seed}"
        argv = ["fit", str(data), "-o", str(out), "-b", TINY, "--weights", str(tiny_net)]
        argv += ["--strategy", "finetune", "--set", "train.epochs=1", "--set", "eval.n_boot=0"]
        argv += ["--set", f"train.seed={seed}", "--set", "train.batch_size=8", "-q", "--no-report"]
        argv += ["--set", "train.frozen_epochs=0"]  # a frozen epoch alone leaves weights as given
        assert main(argv) == 0
        runs.append(out)
    result = ensemble_runs(runs, tmp_path / "ens", method="vote", progress=False)
    parts = result.backbone.parts
    assert len(parts) == 2 and parts[0].weights_sha256 != parts[1].weights_sha256
    record = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert [m["kind"] for m in record["members"]] == ["finetune", "finetune", "ensemble"]
    model = headstart.load(tmp_path / "ens" / "model", cache=CacheRoot.of(tmp_path / "cache"))
    test = result.manifest.split("test")
    proba, failures = model.predict_proba([s.path for s in test])
    assert not failures and proba.shape == (len(test), 2)
    capsys.readouterr()
    argv = ["ensemble", *map(str, runs), "-o", str(tmp_path / "sel"), "--method", "select", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "use --method vote" in err
