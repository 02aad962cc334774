"""``compare-strategies``: scratch vs probe vs fine-tune over seeds, scored on held-out images.

The model is timm's ``test_efficientnet`` (random weights standing in for pretrained ones,
160 px) and the data is 2 demo classes with train and validation folders only (the
hymenoptera shape), so every training run is one short epoch on CPU.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from statistics import mean

import pytest
import torch
import yaml

from headstart.backbones.model import build_backbone
from headstart.backbones.registry import file_sha256, unweighted_ref
from headstart.cli.main import main
from headstart.config import load_config
from headstart.demo import demo_data_dir
from headstart.errors import ConfigError
from headstart.studies.strategies import held_out
from headstart.studies.strategy_stats import Estimate, Key, RowSummary, RunScore, contrast
from salt import copy_demo, make_dataset

TINY = "timm:test_efficientnet"
SEEDS = 2


@pytest.fixture(scope="module")
def tiny(tiny_net: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(data with train/ and validation/ folders only, a random tiny weights file)."""
    root = tmp_path_factory.mktemp("strategies")
    data = copy_demo(root / "data", ("hat", "shoes"), {"train": 6, "validation": 3})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        yield data, tiny_net


def _args(data: Path, weights: Path, out: Path, *extra: str) -> list[str]:
    return [
        "compare-strategies", str(data), "-o", str(out), "-b", TINY,
        "--set", f"backbone.weights={weights}", "--set", "train.epochs=1",
        "--set", "train.batch_size=8", "-q", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def compared(tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(output folder, printed text) of one comparison: 3 strategies x 2 seeds."""
    data, weights = tiny
    out = tmp_path_factory.mktemp("out") / "cmp"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(_args(data, weights, out, "--seeds", str(SEEDS))) == 0
    return out, buffer.getvalue()


def _results(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _split_csv(out: Path, seed: int) -> dict[str, set[str]]:
    splits: dict[str, set[str]] = {}
    with (out / "splits" / f"seed{seed}.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            splits.setdefault(row["split"], set()).add(row["path"])
    return splits


def test_one_row_per_backbone_strategy_and_seed(compared: tuple[Path, str]) -> None:
    out, printed = compared
    rows = _results(out)
    assert sorted((r["strategy"], int(r["seed"])) for r in rows) == sorted(
        (s, seed) for s in ("scratch", "probe", "finetune") for seed in range(SEEDS)
    )
    assert {r["backbone"] for r in rows} == {TINY}
    assert all(int(r["n_test"]) == 6 and float(r["seconds"]) > 0 for r in rows)
    assert all("val split, used as test" in r["scored_split"] for r in rows)
    table = (out / "table.md").read_text()
    assert table.count(f"| {TINY} |") == 3 and "Best:" in table
    assert "Held-out test accuracy over seeds" in printed and "Best:" in printed


def test_scored_split_is_never_the_selection_split(
    compared: tuple[Path, str], tiny: tuple[Path, Path]
) -> None:
    """The data's validation folder is only scored; a val carved from train selects, per seed."""
    out, _ = compared
    vals = []
    for seed in range(SEEDS):
        splits = _split_csv(out, seed)
        assert splits["test"] == {p for p in splits["test"] if p.startswith("validation/")}
        assert len(splits["test"]) == 6
        assert splits["val"] and all(p.startswith("train/") for p in splits["val"])
        assert not splits["val"] & splits["test"] and not splits["train"] & splits["test"]
        vals.append(splits["val"])
        facts = json.loads((out / "runs" / f"timm_test_efficientnet-finetune-seed{seed}"
                            / "finetune.json").read_text())  # fmt: skip
        assert facts["train_images"] == len(splits["train"]) and facts["seed"] == seed
    assert vals[0] != vals[1]  # the seed changes the carved val


def test_scratch_runs_do_not_claim_pretrained_weights(
    compared: tuple[Path, str], tiny: tuple[Path, Path]
) -> None:
    out, _ = compared
    facts = json.loads((out / "runs" / "timm_test_efficientnet-scratch-seed0" / "finetune.json")
                       .read_text())  # fmt: skip
    assert facts["strategy"] == "scratch" and facts["pretrained"] is False
    assert facts["pretrained_weights_sha256"] is None
    assert facts["finetuned_weights_sha256"] != file_sha256(tiny[1])
    tuned = json.loads((out / "runs" / "timm_test_efficientnet-finetune-seed0" / "finetune.json")
                       .read_text())  # fmt: skip
    assert tuned["pretrained"] is True and tuned["pretrained_weights_sha256"] == file_sha256(
        tiny[1]
    )
    rows = _results(out)
    assert {r["strategy"] for r in rows if r["pretrained"] == "false"} == {"scratch"}
    assert not list(out.glob("runs/*/checkpoints"))  # numbers, not models


def test_verdict_numbers_match_the_rows(compared: tuple[Path, str]) -> None:
    out, printed = compared
    doc = json.loads((out / "comparison.json").read_text())
    runs = _results(out)
    acc = {(r["strategy"], int(r["seed"])): float(r["accuracy"]) for r in runs}
    for row in doc["rows"]:
        per_seed = [acc[(row["strategy"], s)] for s in range(SEEDS)]
        assert row["accuracy"]["mean"] == pytest.approx(mean(per_seed), abs=1e-6)
        assert row["accuracy"]["n"] == SEEDS
    best = max(doc["rows"], key=lambda r: (r["accuracy"]["mean"], -r["seconds"]))
    assert doc["verdict"][0].startswith(f"Best: {best['strategy']}")
    assert len(doc["contrasts"]) == 2
    for c in doc["contrasts"]:
        diffs = [acc[(c["best"], s)] - acc[(c["other"], s)] for s in range(SEEDS)]
        assert c["accuracy_diff"]["mean"] == pytest.approx(mean(diffs), abs=1e-6)
        assert c["n_images"] == SEEDS * 6
        low = c["accuracy_diff"]["low"]
        assert c["significant"] == (c["p_value"] < 0.05 and low > 0)
        assert f"{100 * c['accuracy_diff']['mean']:.1f}" in c["verdict"]
        assert f"p={c['p_value']:.2g}" in c["verdict"]
        assert c["verdict"] in doc["verdict"]
        assert " ".join(c["verdict"].split()[:3]) in " ".join(printed.split())


def test_estimate_has_no_interval_with_one_seed_and_stays_in_bounds() -> None:
    one = Estimate.of([0.8])
    assert one.low is None and one.high is None and "no CI" in one.points()
    wide = Estimate.of([0.2, 1.0])
    assert wide.low == 0.0 and wide.high == 1.0


def _row(label: str, accs: list[float]) -> RowSummary:
    return RowSummary(label, "b", label, Estimate.of(accs), Estimate.of(accs), 1.0)


def test_contrast_calls_a_difference_only_when_seeds_and_mcnemar_agree() -> None:
    """Synthetic predictions: 'good' is right on 40 of 40 images per seed, 'bad' on 20;
    'same' matches 'bad' exactly."""
    truth = {s: {Path(f"{s}/{i}"): "a" if i % 2 else "b" for i in range(40)} for s in (0, 1, 2)}
    preds: dict[Key, dict[Path, str]] = {}
    runs: dict[Key, RunScore] = {}
    for name, right in (("good", 40), ("bad", 20), ("same", 20)):
        for s, t in truth.items():
            p = {path: y if i < right else ("a" if y == "b" else "b")
                 for i, (path, y) in enumerate(sorted(t.items()))}  # fmt: skip
            preds[("b", name, s)] = p
            acc = right / 40
            runs[("b", name, s)] = RunScore("b", name, s, True, acc, acc, 1.0, 40, "test")
    good, bad, same = _row("good", [1.0] * 3), _row("bad", [0.5] * 3), _row("same", [0.5] * 3)
    win = contrast(good, bad, runs, preds, truth)
    assert win.significant and win.score_diff.mean == pytest.approx(0.5)
    assert win.n_images == 120 and win.only_best_right == 60 and win.only_other_right == 0
    assert win.verdict.startswith("good beats bad by 50.0 points (95% CI +50.0..+50.0 over 3 seeds")
    tie = contrast(bad, same, runs, preds, truth)
    assert not tie.significant and tie.p_value == 1.0
    assert tie.verdict.startswith("bad and same are not distinguishable with 3 seeds (diff +0.0")
    one = {k: v for k, v in runs.items() if k[2] == 0}
    single = contrast(_row("good", [1.0]), _row("bad", [0.5]), one, preds, truth)
    assert single.significant and "1 seed, so no interval over seeds" in single.verdict
    cheap = RowSummary("bad", "b", "bad", Estimate.of([0.5] * 3), Estimate.of([0.5] * 3), 0.02)
    assert contrast(good, cheap, runs, preds, truth).verdict.endswith("; bad is 50x cheaper")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strategies", "probe,magic"], "unknown strategy 'magic'; valid: scratch, probe"),
        (["--seeds", "0"], "--seeds must be 1 or more"),
        (["-b", "resnet1"], "unknown backbone 'resnet1'"),
        (["-b", f"{TINY},timm:resnet18"], "fits one backbone, not 2"),
    ],
)
def test_bad_input_is_one_line_error(
    tiny: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    data, weights = tiny
    assert main(_args(data, weights, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("headstart: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_data_and_existing_output_are_one_line_errors(
    tiny: tuple[Path, Path],
    compared: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, weights = tiny
    assert main(_args(tmp_path / "nope", weights, tmp_path / "out")) == 2
    assert "does not exist" in capsys.readouterr().err
    out, _ = compared
    assert main(_args(tiny[0], weights, out)) == 2
    err = capsys.readouterr().err
    assert "already holds a comparison" in err and "--overwrite" in err


def test_held_out_split_for_each_shape_of_data(tmp_path: Path) -> None:
    """Unsplit: random per seed.  Train only: val and test carved.  Test folder: kept."""
    cfg = load_config()
    flat = make_dataset(tmp_path / "flat", {"a": 10, "b": 10, "c": 10})
    zero, one = held_out(flat, cfg, 0), held_out(flat, cfg, 1)
    assert "random stratified" in zero.scored and "seed 1" in one.scored
    tests = [{s.path for s in h.manifest.split("test")} for h in (zero, one)]
    assert tests[0] and tests[0] != tests[1]
    only = make_dataset(tmp_path / "only" / "train", {"a": 10, "b": 10})
    carved = held_out(only.parent, cfg, 0)
    assert {"train", "val", "test"} == set(carved.manifest.splits_present())
    assert "val and test carved from train" in carved.scored
    full = tmp_path / "full"
    for split in ("train", "val", "test"):
        make_dataset(full / split, {"a": 4, "b": 4})
    kept = held_out(full, cfg, 3)
    assert kept.scored == "test: folders"
    assert all(s.path.parent.parent.name == "test" for s in kept.manifest.split("test"))
    with pytest.raises(ConfigError, match="test_fraction"):
        held_out(flat, load_config(overrides=["data.test_fraction=0"]), 0)


def test_fit_from_scratch_bundle_and_config_say_so(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``backbone.pretrained=false``: seeded random init, the scratch recipe, no pretrained
    hash in the bundle; the probe refuses it."""
    _, weights = tiny
    data = tmp_path / "small"
    for split, n in (("train", 3), ("validation", 1)):
        for cls in ("hat", "shoes"):
            (data / split / cls).mkdir(parents=True)
            for f in sorted((demo_data_dir() / split / cls).iterdir())[:n]:
                shutil.copy(f, data / split / cls / f.name)
    torch.manual_seed(5)
    a = build_backbone(unweighted_ref(TINY), pretrained=False).model.state_dict()
    torch.manual_seed(5)
    b = build_backbone(unweighted_ref(TINY), pretrained=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    run = tmp_path / "scratch"
    args = [
        "fit", str(data), "-o", str(run), "-b", TINY, "--strategy", "finetune", "--no-report",
        "-q", "--set", "backbone.pretrained=false", "--set", "train.epochs=1",
        "--set", "train.batch_size=8", "--set", "eval.n_boot=0",
    ]  # fmt: skip
    assert main(args) == 0
    info = json.loads((run / "model" / "model.json").read_text())
    assert info["backbone"]["weights_sha256"] not in ("", file_sha256(weights))
    assert info["config"]["backbone"]["pretrained"] is False
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["frozen_epochs"] == 0 and cfg["train"]["backbone_lr_ratio"] == 1.0
    facts = json.loads((run / "finetune.json").read_text())
    # fit's finetune.json leaves out empty fields (FinetuneRecord.to_dict): no hash claimed
    assert facts["pretrained"] is False and facts.get("pretrained_weights_sha256") is None
    probe = ["fit", str(data), "-o", str(tmp_path / "p"), "-b", TINY, "--no-report", "-q"]
    assert main([*probe, "--set", "backbone.pretrained=false"]) == 2
    assert "--strategy finetune" in capsys.readouterr().err


@pytest.mark.slow
def test_hymenoptera_probe_scores_the_val_folder(
    shared_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Real data with train/val only: val (153 usable images) is scored, per seed."""
    out = tmp_path / "hym"
    args = ["compare-strategies", str(shared_data / "hymenoptera"), "-o", str(out)]
    assert main([*args, "--strategies", "probe", "--seeds", "2", "-q"]) == 0
    rows = _results(out)
    assert len(rows) == 2 and len({r["n_test"] for r in rows}) == 1
    assert all(float(r["accuracy"]) > 0.85 for r in rows)
    assert all(p.startswith("val/") for p in _split_csv(out, 1)["test"])
