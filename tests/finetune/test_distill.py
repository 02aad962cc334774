"""Distillation: the soft/hard loss, a tiny distillation that moves a student toward its
teacher, the teacher-probability cache (hit, damaged entry), unlabelled images, resume and the
CLI's one-line errors.

The teacher is a probe on timm ``test_efficientnet`` (random weights, tiny images), the student
the same tiny network fine-tuned, on 2 classes x 8 training images of the demo photos, so each
run takes seconds of CPU.
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
from torch.nn import functional as F

import headstart
from headstart.cache import CacheRoot
from headstart.cli.main import main
from headstart.config import TrainConfig
from headstart.data import Task
from headstart.finetune.soft import Distillation, distillation_loss, soft_row
from headstart.finetune.targets import task_slices
from headstart.finetune.teacher import load_teacher, teacher_rows
from headstart.fsutil import check_entry
from salt import copy_demo, kill_after_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = "timm:test_efficientnet"
CLASSES = ("hat", "shoes")


@pytest.fixture(scope="module")
def tiny(tiny_net: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Data (train/validation/test), unlabelled photos of the same classes, the tiny weights,
    a probe teacher fitted on the data, and a private cache."""
    from headstart.demo import demo_data_dir

    root = tmp_path_factory.mktemp("distill")
    data = copy_demo(root / "data", CLASSES, {"train": 8, "validation": 3, "test": 3})
    unlabelled = root / "unlabelled"
    unlabelled.mkdir()
    for cls in CLASSES:
        for f in sorted((demo_data_dir() / "train" / cls).iterdir())[8:12]:
            shutil.copy(f, unlabelled / f"{cls}-{f.name}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        teacher = root / "teacher"
        args = ["fit", str(data), "-o", str(teacher), "-b", TINY, "--weights", str(tiny_net)]
        assert main([*args, "--set", "eval.n_boot=0", "--no-report", "-q"]) == 0
        yield {
            "data": data,
            "unlabelled": unlabelled,
            "weights": tiny_net,
            "teacher": teacher,
            "cache": root / "cache",
        }


def _args(t: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "distill", str(t["teacher"]), str(t["data"]), "-o", str(out), "--student", TINY,
        "--weights", str(t["weights"]), "--set", "eval.n_boot=0", "--set", "train.batch_size=8",
        "--set", "train.frozen_epochs=0", "--no-report", "-q", *extra,
    ]  # fmt: skip


def _record(run: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((run / "distill.json").read_text())
    return doc


# -- the loss -------------------------------------------------------------------------------
ONE = [Task("label", ("a", "b", "c"))]
LABELS = [Task("items", ("x", "y"), multi_label=True)]


def _loss(
    tasks: list[Task], z: torch.Tensor, y: torch.Tensor, soft: torch.Tensor, **kw: float
) -> torch.Tensor:
    return distillation_loss(
        z, y, soft, tasks=tasks, slices=task_slices(tasks), task_weights=[1.0] * len(tasks),
        distill=Distillation(kw.get("t", 2.0), kw.get("alpha", 0.7)),
        smoothing=kw.get("smoothing", 0.0), class_weights=None,
    )  # fmt: skip


def test_alpha_zero_is_the_recipes_hard_loss_and_alpha_one_hintons_kl() -> None:
    torch.manual_seed(0)
    z = torch.randn(5, 3)
    y = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1])]
    p = torch.softmax(torch.randn(5, 3), dim=1)
    soft = torch.stack([soft_row(row.numpy(), True) for row in p])
    hard = F.cross_entropy(z, y, label_smoothing=0.1)
    assert torch.allclose(_loss(ONE, z, y, soft, alpha=0.0, smoothing=0.1), hard)
    t = 3.0
    q = torch.softmax(p.log() / t, dim=1)
    kl = (q * (q.log() - torch.log_softmax(z / t, dim=1))).sum(1).mean() * t * t
    assert torch.allclose(_loss(ONE, z, y, soft, alpha=1.0, t=t), kl, atol=1e-6)
    # multi-label: BCE against the mix of teacher probabilities and labels
    yl = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    pl = torch.rand(5, 2)
    soft_l = torch.stack([soft_row(row.numpy(), True) for row in pl])
    mixed = F.binary_cross_entropy_with_logits(z[:, :2], 0.6 * pl + 0.4 * yl)
    assert torch.allclose(_loss(LABELS, z[:, :2], yl, soft_l, alpha=0.6), mixed, atol=1e-6)


def test_unlabelled_rows_contribute_the_soft_term_only() -> None:
    torch.manual_seed(1)
    z, p = torch.randn(4, 3), torch.softmax(torch.randn(4, 3), dim=1)
    y = torch.eye(3)[torch.tensor([0, 1, 2, 0])]
    labelled = torch.stack([soft_row(p[i].numpy(), i < 2) for i in range(4)])
    y[2:] = 0  # unlabelled rows carry no target
    both = _loss(ONE, z, y, labelled, alpha=0.7, smoothing=0.1)
    soft_only = _loss(ONE, z, y, labelled, alpha=1.0) * 0.7
    hard_rows = F.cross_entropy(z[:2], y[:2], label_smoothing=0.1, reduction="sum") / 4
    assert torch.allclose(both, soft_only + 0.3 * hard_rows, atol=1e-6)


def test_module_loss_takes_soft_targets_and_mixup_keeps_them_aligned() -> None:
    import timm

    from headstart.backbones import Backbone, Preprocessing
    from headstart.finetune.augment import PRESETS
    from headstart.finetune.module import FinetuneModule
    from headstart.finetune.targets import batch_mixer

    prep = Preprocessing(40, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    net = Backbone("tiny", timm.create_model(TINY.split(":")[1]), "timm", prep, "0" * 64)
    module = FinetuneModule(
        net, ONE, TrainConfig(label_smoothing=0.0), distill=Distillation(2.0, 0.5)
    )
    z = torch.randn(3, 3)
    y = torch.eye(3)[torch.tensor([0, 1, 2])]
    soft = torch.stack([soft_row(np.array([0.2, 0.3, 0.5]), i != 1) for i in range(3)])
    expected = _loss(ONE, z, y * soft[:, -1:], soft, alpha=0.5)
    assert torch.allclose(module.loss(z, y * soft[:, -1:], train=True, soft=soft), expected)
    mix = batch_mixer(PRESETS["strong"])
    assert mix is not None
    torch.manual_seed(3)
    _, both = mix(torch.randn(3, 3, 8, 8), torch.cat([y * soft[:, -1:], soft], dim=1))
    # teacher rows stay distributions; the labelled share is each target row's total
    assert torch.allclose(both[:, 3:6].sum(1), torch.ones(3))
    assert torch.allclose(both[:, :3].sum(1), both[:, 6])


# -- end to end -----------------------------------------------------------------------------
def _kl_to_teacher(teacher: Path, student: Path, paths: list[Path]) -> float:
    """Mean KL(teacher ‖ student) over ``paths``, from the two bundles' probabilities."""
    p = headstart.load(teacher).predict_proba(paths)[0]
    q = headstart.load(student).predict_proba(paths)[0]
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))


@pytest.mark.slow
def test_distillation_moves_the_student_toward_its_teacher(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    """A teacher fitted with the two classes' photos swapped contradicts every label.  Same
    seed and recipe: trained on its soft targets (alpha 1) the student follows it, trained on
    the hard labels (alpha 0) it does not; the second run finds every teacher probability in
    the cache."""
    swapped = tmp_path / "swapped"
    for split in ("train", "validation", "test"):
        for a, b in (("hat", "shoes"), ("shoes", "hat")):
            shutil.copytree(tiny["data"] / split / a, swapped / split / b)
    teacher = tmp_path / "teacher"
    fit = ["fit", str(swapped), "-o", str(teacher), "-b", TINY, "--weights", str(tiny["weights"])]
    assert main([*fit, "--set", "eval.n_boot=0", "--no-report", "-q"]) == 0
    # the head alone trains, on the features the probe teacher saw (no augmentation), at a
    # rate that moves it in a few steps (the random tiny network's features are small)
    extra = ("--set", "train.epochs=6", "--set", "train.frozen_epochs=6", "--set", "train.lr=1")
    extra += ("--set", "augment.preset=none")
    t = {**tiny, "teacher": teacher}
    assert main(_args(t, tmp_path / "soft", "--alpha", "1", *extra)) == 0
    assert main(_args(t, tmp_path / "hard", "--alpha", "0", *extra)) == 0
    train = sorted((tiny["data"] / "train").rglob("*.jpg"))
    kl_soft = _kl_to_teacher(teacher / "model", tmp_path / "soft" / "model", train)
    kl_hard = _kl_to_teacher(teacher / "model", tmp_path / "hard" / "model", train)
    assert kl_soft < 0.5 * kl_hard
    agree = [
        _record(tmp_path / r)["metrics"]["test"]["label"]["agreement"] for r in ("soft", "hard")
    ]  # type: ignore[index]
    assert agree[0] > agree[1]
    first, second = _record(tmp_path / "soft"), _record(tmp_path / "hard")
    assert first["teacher_probabilities"]["computed"] == 28  # type: ignore[index]
    assert second["teacher_probabilities"] == {
        **second["teacher_probabilities"],
        "cached": 28,
        "computed": 0,
    }  # type: ignore[dict-item]
    assert first["images"] == {"labelled": 16, "unlabelled": 0, "unlabelled_skipped": {}}
    assert first["alpha"] == 1.0 and first["temperature"] == 2.0
    row = first["metrics"]["test"]["label"]  # type: ignore[index]
    assert row["metric"] == "accuracy" and 0 <= row["agreement"] <= 1
    finetune = json.loads((tmp_path / "soft" / "finetune.json").read_text())
    assert finetune["strategy"] == "distill"
    config = (tmp_path / "soft" / "config.yaml").read_text()
    assert "teacher: " + str(teacher) in config
    preds = headstart.load(tmp_path / "soft" / "model").predict([tiny["data"] / "test"])
    assert len(preds) == 6 and all(p.top[0][0] in CLASSES for p in preds)


def test_teacher_probabilities_are_cached_and_a_damaged_entry_is_recomputed(
    tiny: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from headstart.features.extract import hash_files

    model, identity = load_teacher(tiny["teacher"], CacheRoot.of(tiny["cache"]))
    paths = sorted(tiny["unlabelled"].iterdir())
    shas = hash_files(paths, {})
    first = teacher_rows(model, identity, paths, shas)
    assert (first.cached, first.computed) == (
        0,
        8,
    ) or first.cached == 8  # another test may be first
    again = teacher_rows(model, identity, paths, shas)
    assert (again.cached, again.computed) == (8, 0)
    for sha in shas:
        np.testing.assert_array_equal(again.rows[sha], first.rows[sha])
    entry = tiny["cache"] / "teacher-probabilities" / f"{identity}.npz"
    assert check_entry(entry)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="headstart"):
        damaged = teacher_rows(model, identity, paths, shas)
    assert (damaged.cached, damaged.computed) == (0, 8)
    assert "does not match its sha256" in caplog.text
    for sha in shas:
        np.testing.assert_allclose(damaged.rows[sha], first.rows[sha], rtol=1e-6)
    assert check_entry(entry)


def test_unlabelled_images_train_the_student(tiny: dict[str, Path], tmp_path: Path) -> None:
    """The images a CSV of paths lists are used (a copy of a labelled photo is left out); the
    folder form is the DDP and resume tests'."""
    unlabelled = tmp_path / "more"
    shutil.copytree(tiny["unlabelled"], unlabelled)
    shutil.copy(next((tiny["data"] / "test" / "hat").iterdir()), unlabelled / "seen.jpg")
    listing = tmp_path / "more.csv"
    rows = [f"more/{p.name}" for p in sorted(unlabelled.iterdir())]
    listing.write_text("path,comment\n" + "".join(f"{r},x\n" for r in rows))
    out = tmp_path / "run"
    assert main(_args(tiny, out, "--unlabelled", str(listing), "--set", "train.epochs=1")) == 0
    record = _record(out)
    assert record["images"] == {
        "labelled": 16,
        "unlabelled": 8,
        "unlabelled_skipped": {"in_data": 1, "unreadable": 0},
    }
    assert str(listing) in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_two_task_teacher_with_a_multi_label_task_and_mixup(
    tiny: dict[str, Path], composites: Path, tmp_path: Path
) -> None:
    """A teacher of two tasks (multi-class ``left``, multi-label ``items``): the student
    answers both (label columns taken from the teacher), trained with MixUp/CutMix mixing the
    teacher's rows with the targets."""
    rows = list(csv.reader(composites.open()))
    keep = [rows[0], *[r for i, r in enumerate(rows[1:]) if r[1] != "train" or i % 4 == 0]]
    small = composites.parent / "distill-small.csv"
    with small.open("w", newline="") as fh:
        csv.writer(fh).writerows(keep)
    teacher = tmp_path / "teacher"
    fit = ["fit", str(small), "-o", str(teacher), "-b", TINY, "--weights", str(tiny["weights"])]
    fit += ["--set", "data.label_column=[left,items]", "--set", "eval.n_boot=0"]
    assert main([*fit, "--no-report", "-q"]) == 0
    out = tmp_path / "student"
    args = _args({**tiny, "teacher": teacher, "data": small}, out, "--set", "train.epochs=1")
    assert main([*args, "--set", "augment.preset=strong"]) == 0
    record = _record(out)
    assert set(record["metrics"]["test"]) == {"left", "items"}  # type: ignore[index]
    assert record["metrics"]["test"]["items"]["metric"] == "mAP"  # type: ignore[index]
    model = headstart.load(out / "model")
    assert [(t.name, t.multi_label) for t in model.tasks] == [("left", False), ("items", True)]
    assert model.tasks == headstart.load(teacher / "model").tasks


# -- resume ---------------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "headstart.cli.main", *args]


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tiny: dict[str, Path], tmp_path: Path) -> None:
    """kill -9 after the first checkpoint, then distill --resume: same curve and metrics."""
    extra = ("--set", "train.epochs=3", "--unlabelled", str(tiny["unlabelled"]))
    assert main(_args(tiny, tmp_path / "whole", *extra)) == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    kill_after_checkpoint(_cli(*_args(tiny, killed, *extra)), killed, env)
    assert not (killed / "model").exists()
    assert main(["distill", "--resume", str(killed), "-q", "--no-report"]) == 0
    curves = [
        (r / "logs" / "metrics.csv").read_text().splitlines() for r in (tmp_path / "whole", killed)
    ]
    assert len(curves[1]) == 4
    for a, b in zip(*curves, strict=True):
        assert a.split(",")[:4] == b.split(",")[:4]  # epoch, train_loss, val_loss, val_acc
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (tmp_path / "whole", killed)]
    assert metrics[0]["val"] == metrics[1]["val"]
    assert _record(killed)["images"] == _record(tmp_path / "whole")["images"]
    assert main(["distill", "--resume", str(killed), "-q"]) == 2  # finished runs do not resume


@pytest.mark.slow
def test_two_process_ddp_on_cpu_distils_with_unlabelled_images(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "ddp"
    args = _args(tiny, out, "--unlabelled", str(tiny["unlabelled"]), "--devices", "2")
    args += ["--set", "train.accelerator=cpu", "--set", "train.distributed=ddp"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(_cli(*args), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _record(out)["images"]["unlabelled"] == 8  # type: ignore[index]
    predictions = headstart.load(out / "model").predict([tiny["data"] / "test"])
    assert len(predictions) == 6 and all(p.top for p in predictions)


# -- one-line errors ------------------------------------------------------------------------
def test_bad_input_is_one_line_and_writes_nothing(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    other = copy_demo(tmp_path / "other", ("hat", "pants"), {"train": 2, "validation": 1})
    cases = {
        "teacher model not found": ["distill", str(tmp_path / "nope"), str(tiny["data"])],
        "is not a model bundle": ["distill", str(tiny["data"]), str(tiny["data"])],
        "labels the teacher does not know: pants": ["distill", str(tiny["teacher"]), str(other)],
        "no usable unlabelled image": [
            "distill", str(tiny["teacher"]), str(tiny["data"]), "--unlabelled", str(empty)
        ],
        "fused": ["distill", str(tiny["teacher"]), str(tiny["data"]), "--student", "a+b"],
        "--alpha must be between 0 and 1": [
            "distill", str(tiny["teacher"]), str(tiny["data"]), "--alpha", "1.5"
        ],
        "distill needs TEACHER": ["distill"],
    }  # fmt: skip
    for expected, args in cases.items():
        assert main([*args, "-o", str(out), "-q"]) == 2, expected
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
        assert not out.exists(), expected
