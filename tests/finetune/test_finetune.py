"""Fine-tuning on Lightning: recipe (freeze → unfreeze, frozen BatchNorm, layer-wise rates),
schedules, imbalance, the run folder and bundle, lr-find, kill-and-resume and 2-process DDP.

Models are tiny (timm ``test_efficientnet`` with random weights, 160 px) and the data is
2 classes x 8 training images from the demo set, so each run takes seconds of CPU.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

import headstart
from headstart.backbones import Backbone, Preprocessing, resolve_backbone
from headstart.backbones.registry import file_sha256
from headstart.cli.main import main
from headstart.config import TrainConfig
from headstart.data import Task
from headstart.errors import WeightsError
from headstart.finetune import backbone_blocks, linear_head_export, param_groups
from headstart.finetune.data import EpochSampler, decide_imbalance
from headstart.finetune.module import FinetuneModule
from headstart.finetune.schedules import PhasePlan, lr_factors
from headstart.finetune.trainer import read_checkpoint
from salt import copy_demo, kill_after_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = "timm:test_efficientnet"
PREP = Preprocessing(40, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _tiny_backbone() -> Backbone:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False)
    return Backbone("tiny", model, "timm", PREP, "0" * 64)


@pytest.fixture(scope="module")
def tiny(tiny_net: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(data folder with train/validation/test, random tiny weights file), private cache."""
    root = tmp_path_factory.mktemp("tiny")
    data = copy_demo(root / "data", ("hat", "shoes"), {"train": 8, "validation": 3, "test": 3})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        yield data, tiny_net


def _fit_args(data: Path, weights: Path, out: Path, *extra: str) -> list[str]:
    return [
        "fit", str(data), "-o", str(out), "-b", TINY, "--weights", str(weights),
        "--set", "eval.n_boot=0", "--set", "train.batch_size=8", "--no-report", "-q", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tuned_run(tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, weights = tiny
    run = tmp_path_factory.mktemp("runs") / "ft"
    args = _fit_args(data, weights, run, "--strategy", "finetune", "--set", "train.epochs=2")
    args += ["--set", "train.frozen_epochs=0"]  # so the best epoch has tuned the backbone
    assert main(args) == 0
    return run


# -- recipe -----------------------------------------------------------------------------------
def test_mobilenet_blocks_are_features_and_rates_decay() -> None:
    """torchvision MobileNetV2 is cut at ``features[i]``; deeper blocks learn faster."""
    import torchvision

    model = torchvision.models.mobilenet_v2(weights=None)
    backbone = Backbone("mobilenet_v2", model, "torchvision", PREP, "0" * 64)
    blocks = backbone_blocks(backbone)
    assert [b.name for b in blocks] == [f"features.{i}" for i in range(19)]
    head = torch.nn.Linear(1280, 3)
    groups = param_groups(
        head, blocks, lr=1e-3, backbone_lr_ratio=0.5, layer_decay=0.8, weight_decay=0.05
    )
    rates = {g["name"].removesuffix(":nd"): g["lr"] for g in groups}
    assert rates["head"] == 1e-3 and rates["features.18"] == pytest.approx(5e-4)
    assert rates["features.0"] == pytest.approx(5e-4 * 0.8**18)
    assert all(g["weight_decay"] == 0 for g in groups if g["name"].endswith(":nd"))
    partial = param_groups(
        head, blocks, lr=1e-3, backbone_lr_ratio=0.5, layer_decay=0.8, weight_decay=0.0,
        unfreeze_last=2,
    )  # fmt: skip
    assert {g["name"].removesuffix(":nd") for g in partial} == {
        "head",
        "features.17",
        "features.18",
    }


TWO = [Task("label", ("a", "b"))]


def _fit_module(module: FinetuneModule, epochs: int) -> None:
    from lightning.pytorch import Trainer

    torch.manual_seed(1)
    targets = torch.eye(2)[torch.tensor([0, 1] * 8)]  # one-hot rows of the one task
    data = TensorDataset(torch.randn(16, 3, 32, 32) * 3 + 1, targets)
    trainer = Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))


def test_frozen_epochs_leave_backbone_and_batchnorm_stats_untouched() -> None:
    """The Keras/fastai trap: while frozen, BN running statistics must not move; after the
    unfreeze both weights and statistics train."""
    cfg = TrainConfig(epochs=1, frozen_epochs=1, lr=1e-2, dropout=0.0)
    module = FinetuneModule(_tiny_backbone(), TWO, cfg)
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    head_before = module.linear_layer().weight.detach().clone()
    _fit_module(module, epochs=1)
    after = module.backbone.state_dict()
    assert any("running_mean" in k for k in before)
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    assert not torch.equal(module.linear_layer().weight, head_before)

    unfrozen = FinetuneModule(_tiny_backbone(), TWO, cfg.model_copy(update={"frozen_epochs": 0}))
    _fit_module(unfrozen, epochs=1)
    moved = unfrozen.backbone.state_dict()
    stats = [k for k in before if k.endswith("running_mean")]
    assert any(not torch.equal(moved[k], before[k]) for k in stats)
    weights = [k for k in before if k.endswith("weight")]
    assert any(not torch.equal(moved[k], before[k]) for k in weights)


def test_partial_unfreeze_trains_only_the_last_blocks() -> None:
    cfg = TrainConfig(epochs=1, frozen_epochs=0, unfreeze_last=1, lr=1e-2)
    module = FinetuneModule(_tiny_backbone(), TWO, cfg)
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    _fit_module(module, epochs=1)
    last = module.blocks[-1].name
    changed = {k for k, v in module.backbone.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(f"model.{last}.") for k in changed)


def test_schedule_phases() -> None:
    """Backbone groups wait at 0 during the head-only epochs; each phase warms up then decays."""
    plan = PhasePlan(total=100, frozen=20, warmup=5, steps_per_epoch=10, step_epochs=2)
    head, body = lr_factors("cosine", plan, [True, False])
    assert body(0) == body(19) == 0.0 and body(25) == pytest.approx(1.0)
    assert head(0) < head(4) < head(5) == pytest.approx(1.0)
    assert head(99) == pytest.approx(0.01, abs=0.01)
    assert head(20) < 0.5  # the unfreeze restarts the warm-up
    _, step_body = lr_factors("step", plan, [True, False])
    assert step_body(30) == 1.0 and step_body(45) == pytest.approx(0.1)
    one_head, _ = lr_factors("onecycle", plan, [True, False])
    assert one_head(20) < one_head(40) and one_head(99) < 0.01


def test_imbalance_remedy_thresholds() -> None:
    classes = ["a", "b"]
    assert decide_imbalance(["a"] * 6 + ["b"] * 3, classes, "auto", 3.0).remedy == "none"
    mild = decide_imbalance(["a"] * 40 + ["b"] * 8, classes, "auto", 3.0)
    assert mild.remedy == "weighted_loss" and mild.ratio == 5.0 and "5.0" in mild.reason
    assert decide_imbalance(["a"] * 99 + ["b"] * 3, classes, "auto", 3.0).remedy == "sampler"
    assert decide_imbalance(["a"] * 6 + ["b"] * 3, classes, "sampler", 3.0).remedy == "sampler"


def test_epoch_sampler_depends_only_on_seed_and_epoch() -> None:
    sampler = EpochSampler(100, seed=3)
    sampler.set_epoch(2)
    first = list(sampler)
    sampler.set_epoch(5)
    assert list(sampler) != first
    sampler.set_epoch(2)
    assert list(sampler) == first and sorted(i for i, _ in first) == list(range(100))
    balanced = EpochSampler(100, seed=3, balance_on=[0] * 90 + [1] * 10)
    minority = sum(1 for i, _ in balanced if i >= 90)
    assert 35 <= minority <= 65


def test_linear_head_export_predicts_like_softmax() -> None:
    rng = np.random.default_rng(0)
    w, b, x = rng.normal(size=(3, 5)), rng.normal(size=3), rng.normal(size=(4, 5))
    head = linear_head_export(w, b, ["a", "b", "c"])
    expected = torch.softmax(torch.tensor(x @ w.T + b), dim=1).numpy()
    np.testing.assert_allclose(head.predict_proba(x), expected, atol=1e-10)


# -- the run folder ---------------------------------------------------------------------------
def test_finetune_run_folder_and_bundle(tuned_run: Path, tiny: tuple[Path, Path]) -> None:
    """Same files as a probe run plus logs; the bundle holds the fine-tuned weights (their own
    sha256, never the pretrained one) and predicts through the unchanged loader."""
    data, weights = tiny
    for name in ("metrics.json", "manifest.csv", "predictions.csv", "config.yaml", "run.json"):
        assert (tuned_run / name).is_file(), name
    with (tuned_run / "logs" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[0]["frozen"] == "0"
    assert {"train_loss", "val_loss", "val_acc"} <= set(rows[0])
    info = json.loads((tuned_run / "model" / "model.json").read_text())
    sha = info["backbone"]["weights_sha256"]
    assert sha == file_sha256(tuned_run / "model" / "backbone.safetensors")
    assert sha != resolve_backbone(TINY, weights).weights_sha256
    facts = json.loads((tuned_run / "finetune.json").read_text())
    assert facts["epochs_run"] == 2 and facts["imbalance"]["label"]["remedy"] == "none"

    model = headstart.load(tuned_run / "model")
    val = sorted((data / "validation" / "hat").iterdir())
    proba, failures = model.predict_proba(val)
    assert not failures and proba.shape == (3, 2)
    with (tuned_run / "predictions.csv").open() as fh:
        logged = {Path(r["path"]).name: float(r["p:hat"]) for r in csv.DictReader(fh)}
    # what training measured on validation is what the shipped bundle predicts
    np.testing.assert_allclose(proba[:, 0], [logged[p.name] for p in val], atol=1e-3)
    tuned = load_file(str(tuned_run / "model" / "backbone.safetensors"))
    assert set(tuned) == set(load_file(str(weights)))


def test_finetune_bundles_an_ood_scorer_of_its_own_backbone(
    tuned_run: Path, tiny: tuple[Path, Path]
) -> None:
    """The bank holds the training images' features from the fine-tuned backbone (what the
    bundle embeds with), the threshold is set on the val split: about 95% of its images pass."""
    data, _ = tiny
    model = headstart.load(tuned_run / "model")
    assert model.ood is not None
    info = json.loads((tuned_run / "model" / "model.json").read_text())["ood"]
    assert info["train_rows"] == info["bank_rows"] == 16  # 8 hats + 8 shoes
    assert info["fitted_on"] == "the val split (6 images)"
    val = sorted((data / "validation").rglob("*.jpg"))
    scores, failures = model.ood_scores(val)
    assert not failures
    assert np.mean(scores <= model.ood.threshold) >= 0.8  # 6 images: 95% means all but one
    train = sorted((data / "train").rglob("*.jpg"))
    # bank rows scored by the shipped model: each is its own nearest neighbour
    np.testing.assert_allclose(model.ood_scores(train)[0], 0.0, atol=2e-3)
    (prediction,) = model.predict(val[:1])
    assert prediction.ood_score is not None and prediction.ood is not None


class _RunsCode:
    """Unpickling this touches a file: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_a_received_checkpoint_runs_no_code(
    tuned_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run folder may come from someone else: resuming from a checkpoint that carries code
    refuses it in one line and runs nothing; the run's real checkpoints read as plain tensors."""
    assert "state_dict" in read_checkpoint(tuned_run / "checkpoints" / "last.ckpt")
    run = tmp_path / "received"
    shutil.copytree(tuned_run, run, ignore=shutil.ignore_patterns("model"))
    (run / "resume.json").write_text(json.dumps({"data": "x", "strategy": "finetune"}))
    marker = tmp_path / "ran"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, run / "checkpoints" / "last.ckpt")
    assert main(["fit", "--resume", str(run), "-q", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused checkpoint" in err, err
    assert not marker.exists()
    with pytest.raises(WeightsError, match="not a Lightning checkpoint"):
        torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.ckpt")
        read_checkpoint(tmp_path / "plain.ckpt")


def _resumable_copy(tuned_run: Path, dest: Path) -> Path:
    shutil.copytree(tuned_run, dest, ignore=shutil.ignore_patterns("model"))
    record = json.loads((dest / "resume.json").read_text())
    (dest / "resume.json").write_text(json.dumps({**record, "finished": False}))
    return dest


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_resumed_state_cannot_name_a_code_carrying_best_checkpoint(
    tuned_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """A valid ``last.ckpt`` whose checkpoint-callback state names a pickled best checkpoint
    (with a score no epoch beats) gets it refused in one line: nothing is unpickled, and a
    best checkpoint outside the run's own folder is not even read."""
    run = _resumable_copy(tuned_run, tmp_path / "received")
    marker = tmp_path / "ran"
    evil = (run / "checkpoints" if where == "inside" else tmp_path) / "best.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, evil)
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    (name,) = [k for k in state["callbacks"] if k.startswith("ModelCheckpoint")]
    record = {"dirpath": str(run / "checkpoints"), "best_model_path": str(evil)}
    state["callbacks"][name].update(record, best_model_score=torch.tensor(9.0))
    torch.save(state, last)
    assert main(["fit", "--resume", str(run), "-q", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err and "best.ckpt" in err, err
    assert not marker.exists()


def test_a_damaged_last_checkpoint_is_one_line(
    tuned_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _resumable_copy(tuned_run, tmp_path / "damaged")
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    assert main(["fit", "--resume", str(run), "-q", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read checkpoint" in err and str(last) in err


def test_auto_strategy_says_what_it_chose(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """auto: the probe first; fine-tuning only below the skip threshold; the better one on
    validation is the model, and finetune.json says which and why."""
    data, weights = tiny
    skip = _fit_args(data, weights, tmp_path / "skip", "--strategy", "auto")
    assert main([*skip, "--set", "strategy.auto_skip_above=0.0"]) == 0
    facts = json.loads((tmp_path / "skip" / "finetune.json").read_text())
    assert facts["chosen"] == "probe" and "fine-tuning skipped" in facts["reason"]
    assert not (tmp_path / "skip" / "checkpoints").exists()

    both = _fit_args(data, weights, tmp_path / "both", "--strategy", "auto")
    both += ["--set", "strategy.auto_skip_above=1.0", "--set", "train.epochs=1"]
    assert main([*both, "--set", "train.frozen_epochs=0"]) == 0
    facts = json.loads((tmp_path / "both" / "finetune.json").read_text())
    assert facts["chosen"] in ("probe", "finetune") and "finetune_val_score" in facts
    info = json.loads((tmp_path / "both" / "model" / "model.json").read_text())
    probe_sha = resolve_backbone(TINY, weights).weights_sha256
    assert (info["backbone"]["weights_sha256"] == probe_sha) == (facts["chosen"] == "probe")


def test_bad_strategy_and_resume_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny: tuple[Path, Path]
) -> None:
    data, weights = tiny
    assert main(["fit", str(data), "--strategy", "finetuned", "-o", str(tmp_path / "r")]) == 2
    assert "unknown --strategy 'finetuned'; valid: probe, finetune, auto" in capsys.readouterr().err
    assert main(["fit", "--resume", str(tmp_path)]) == 2
    assert "not a resumable run" in capsys.readouterr().err
    args = _fit_args(data, weights, tmp_path / "p", "--strategy", "finetune", "--precision", "x")
    assert main(args) == 2
    assert "unknown precision 'x'" in capsys.readouterr().err
    assert main(["fit", "-q"]) == 2
    assert "DATA" in capsys.readouterr().err


def test_lr_find_prints_suggestion_and_saves_plot(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, weights = tiny
    args = ["lr-find", str(data), "-o", str(tmp_path), "-b", TINY, "--weights", str(weights)]
    assert main([*args, "--steps", "6", "--set", "train.batch_size=4", "-q"]) == 0
    out = capsys.readouterr().out
    assert "Suggested learning rate" in out or "No suggestion" in out
    assert (tmp_path / "lr_find.png").stat().st_size > 1000
    record = json.loads((tmp_path / "lr_find.json").read_text())
    assert record["steps"] >= 2 and record["lr"] == sorted(record["lr"])


# -- resume and DDP (subprocesses) ------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "headstart.cli.main", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "logs" / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """kill -9 after the first checkpoint, then --resume: same validation curve and metrics."""
    data, weights = tiny
    extra = ("--strategy", "finetune", "--set", "train.epochs=3")
    assert main(_fit_args(data, weights, tmp_path / "whole", *extra)) == 0
    killed = tmp_path / "killed"
    kill_after_checkpoint(_cli(*_fit_args(data, weights, killed, *extra)), killed, _env())
    assert not (killed / "model").exists()
    assert main(["fit", "--resume", str(killed), "-q", "--no-report"]) == 0
    whole, resumed = _history(tmp_path / "whole"), _history(killed)
    assert [r["epoch"] for r in resumed] == ["0", "1", "2"]
    for a, b in zip(whole, resumed, strict=True):
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), abs=1e-6)
        assert a["val_acc"] == b["val_acc"]
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (tmp_path / "whole", killed)]
    assert metrics[0]["val"]["tasks"]["label"]["n"] == 6
    assert metrics[0]["val"] == metrics[1]["val"]
    assert main(["fit", "--resume", str(killed)]) == 2  # finished runs do not resume


@pytest.mark.slow
def test_two_process_ddp_on_cpu_writes_a_bundle_that_predicts(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    data, weights = tiny
    run = tmp_path / "ddp"
    args = _fit_args(data, weights, run, "--strategy", "ddp", "--devices", "2")
    args += ["--set", "train.accelerator=cpu", "--set", "train.epochs=2"]
    done = subprocess.run(_cli(*args), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    model = headstart.load(run / "model")
    predictions = model.predict([data / "test"])
    assert len(predictions) == 6 and all(p.top for p in predictions)
    config = json.loads((run / "model" / "model.json").read_text())["config"]
    assert config["train"]["devices"] == 2 and config["train"]["distributed"] == "ddp"


# -- tasks ------------------------------------------------------------------------------------
def test_soft_targets_and_class_weights_give_pytorchs_class_index_loss() -> None:
    """Targets are one-hot rows now: the loss must equal cross-entropy on class indices (with
    label smoothing and class weights normalised as PyTorch does), so plain runs train as before."""
    cfg = TrainConfig(label_smoothing=0.1)
    weights = {"label": torch.tensor([0.5, 2.0, 1.0])}
    tasks = [Task("label", ("a", "b", "c"))]
    module = FinetuneModule(_tiny_backbone(), tasks, cfg, class_weights=weights)
    logits = torch.randn(6, 3)
    index = torch.tensor([0, 1, 2, 1, 0, 2])
    expected = torch.nn.functional.cross_entropy(
        logits, index, weight=weights["label"], label_smoothing=0.1
    )
    got = module.loss(logits, torch.eye(3)[index], train=True)
    torch.testing.assert_close(got, expected)


def test_two_tasks_sum_their_weighted_losses_and_score_per_task() -> None:
    cfg = TrainConfig(label_smoothing=0.0, task_weights={"items": 2.0})
    tasks = [Task("left", ("a", "b")), Task("items", ("x", "y", "z"), multi_label=True)]
    module = FinetuneModule(_tiny_backbone(), tasks, cfg)
    logits = torch.tensor([[2.0, -1.0, 3.0, -3.0, 0.5], [-1.0, 1.0, -2.0, 2.0, -0.5]])
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0, 0.0]])
    ce = torch.nn.functional.cross_entropy(logits[:, :2], target[:, :2])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 2:], target[:, 2:])
    torch.testing.assert_close(module.loss(logits, target, train=False), ce + 2.0 * bce)
    # image 0: left right, items exact; image 1: left wrong, items exact: means 1 and 1/2
    torch.testing.assert_close(module.sample_scores(logits, target), torch.tensor([1.0, 0.5]))
    partial = torch.tensor([[1.0, 0.0, 1.0, 1.0, 1.0]])  # items: predicted {x, z} of {x, y, z}
    torch.testing.assert_close(module.sample_scores(logits[:1], partial), torch.tensor([0.9]))
    proba = module.predictions(logits)
    torch.testing.assert_close(proba[:, :2].sum(dim=1), torch.ones(2))
    torch.testing.assert_close(proba[:, 2:], torch.sigmoid(logits[:, 2:]))


def test_task_weights_must_name_tasks() -> None:
    from headstart.errors import ConfigError

    cfg = TrainConfig(task_weights={"nope": 1.0})
    tasks = [Task("a", ("x", "y")), Task("b", ("p", "q"), True)]
    with pytest.raises(ConfigError, match="unknown task"):
        FinetuneModule(_tiny_backbone(), tasks, cfg)


def test_mixup_and_cutmix_mix_target_rows_of_every_task() -> None:
    from headstart.finetune.augment import AugmentPlan
    from headstart.finetune.targets import batch_mixer

    torch.manual_seed(0)
    images = torch.rand(4, 3, 16, 16)
    rows = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]] * 2)
    for plan in (AugmentPlan(True, (1, 1), False, "none", 0.4, 0.0),
                 AugmentPlan(True, (1, 1), False, "none", 0.0, 1.0)):  # fmt: skip
        mixer = batch_mixer(plan)
        assert mixer is not None
        mixed_images, mixed = mixer(images, rows)
        assert mixed_images.shape == images.shape
        assert torch.all((mixed >= 0) & (mixed <= 1))
        torch.testing.assert_close(mixed[:, :2].sum(dim=1), torch.ones(4))  # still a distribution
    assert batch_mixer(AugmentPlan(True, (1, 1), False, "none", 0.0, 0.0)) is None


def test_two_task_finetune_trains_exports_and_predicts(composites: Path, tmp_path: Path) -> None:
    rows = list(csv.reader(composites.open()))
    keep = [rows[0], *[r for i, r in enumerate(rows[1:]) if r[1] != "train" or i % 3 == 0]]
    small = composites.parent / "small.csv"
    with small.open("w", newline="") as fh:
        csv.writer(fh).writerows(keep)
    out = tmp_path / "ft"
    args = ["fit", str(small), "-o", str(out), "-q", "--no-report", "--strategy", "finetune"]
    args += ["--set", "data.label_column=[left,items]", "--set", "eval.n_boot=0"]
    args += ["--set", "train.epochs=1", "--set", "train.frozen_epochs=0"]
    args += ["--set", "train.batch_size=16", "--set", "train.task_weights={items: 2.0}"]
    args += ["--set", "augment.preset=strong"]  # MixUp/CutMix of target rows
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["val"]["tasks"]) == {"left", "items"}
    facts = json.loads((out / "finetune.json").read_text())
    assert set(facts["imbalance"]) == {"left", "items"}
    model = headstart.load(out / "model")
    assert [t.multi_label for t in model.tasks] == [False, True]
    photos = sorted((composites.parent / "test").glob("*.jpg"))[:3]
    probas, failures = model.task_proba(photos)
    assert not failures
    np.testing.assert_allclose(probas["left"].sum(axis=1), 1.0, rtol=1e-6)
    assert ((probas["items"] >= 0) & (probas["items"] <= 1)).all()
    with (out / "predictions.csv").open() as fh:
        logged = {Path(r["path"]).name: float(r["p:items:hat"]) for r in csv.DictReader(fh)}
    test = sorted((composites.parent / "test").glob("*.jpg"))
    probas, _ = model.task_proba(test)
    expected = [logged[p.name] for p in test]
    np.testing.assert_allclose(probas["items"][:, 0], expected, atol=1e-3)
    assert model.ood is not None and model.ood.feature_dim == model.backbone_ref.feature_dim
