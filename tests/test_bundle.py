"""The model bundle format: committed fixtures keep loading, damage is caught, nothing is unpickled,
and writes never leave a half-written bundle behind."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import headstart
from conftest import FIXTURES
from headstart.bundle import FORMAT_VERSION, SINGLE_FORMAT_VERSION, read_bundle, write_bundle
from headstart.demo import demo_data_dir
from headstart.errors import BundleError, ConfigError, PathNotFoundError
from headstart.fsutil import file_digest
from headstart.result import FitResult


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    dest = tmp_path / "model"
    shutil.copytree(FIXTURES / "bundle_v1", dest)
    return dest


def test_format_v1_fixture_loads_and_predicts_as_when_written() -> None:
    expected = json.loads((FIXTURES / "bundle_v1_expected.json").read_text())
    model = headstart.load(FIXTURES / "bundle_v1")
    assert model.classes == ["hat", "pants", "shoes"]
    photos = [demo_data_dir() / p for p in expected["photos"]]
    proba, failures = model.predict_proba(photos)
    assert not failures
    np.testing.assert_allclose(proba, expected["probabilities"], atol=2e-4)
    assert [t.name for t in model.tasks] == ["label"] and not model.tasks[0].multi_label
    # written before bundles had an OOD scorer: it predicts as before, with no OOD score
    assert model.ood is None and model.ood_threshold is None
    predictions = model.predict(photos)
    assert [p.top[0][0] for p in predictions] == ["hat", "shoes"]
    assert all(p.ood_score is None and p.ood is None for p in predictions)
    row = predictions[0].to_dict()
    assert row["ood_score"] is None and row["ood"] is None
    with pytest.raises(ConfigError, match="no out-of-distribution scorer"):
        model.ood_scores(photos)


def test_newer_format_is_refused_with_upgrade_hint(bundle: Path) -> None:
    info = json.loads((bundle / "model.json").read_text())
    info["format_version"] = FORMAT_VERSION + 1
    (bundle / "model.json").write_text(json.dumps(info))
    with pytest.raises(BundleError, match="upgrade headstart"):
        read_bundle(bundle)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda b: (b / "model.json").write_text("{not json"), "damaged"),
        (lambda b: (b / "model.json").unlink(), "not a model bundle"),
        (lambda b: (b / "head.safetensors").unlink(), "missing"),
        (lambda b: (b / "head.safetensors").write_bytes(b"\0" * 64), "sha256"),
    ],
)
def test_damaged_bundles_give_one_clear_error(bundle: Path, damage, needle: str) -> None:  # type: ignore[no-untyped-def]
    damage(bundle)
    with pytest.raises(BundleError, match=needle):
        read_bundle(bundle)


def test_missing_bundle_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError, match="nowhere"):
        headstart.load(tmp_path / "nowhere")


class _Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path("/tmp/headstart-pwned").touch, ())


def test_a_pickle_in_place_of_the_weights_is_never_executed(bundle: Path) -> None:
    marker = Path("/tmp/headstart-pwned")
    marker.unlink(missing_ok=True)
    (bundle / "head.safetensors").write_bytes(pickle.dumps(_Boom()))
    info = json.loads((bundle / "model.json").read_text())
    del info["files"]["head.safetensors"]  # skip the digest so the loader really reads the file
    (bundle / "model.json").write_text(json.dumps(info))
    with pytest.raises(BundleError):
        read_bundle(bundle)
    assert not marker.exists()


def test_rewriting_a_bundle_is_atomic(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    contents = read_bundle(bundle)
    before = (bundle / "model.json").read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("headstart.bundle._save_arrays", crash)
    with pytest.raises(OSError, match="disk full"):
        write_bundle(bundle, tasks=contents.tasks, heads=contents.heads, backbone=contents.backbone)
    assert (bundle / "model.json").read_bytes() == before
    assert [p.name for p in bundle.parent.iterdir()] == ["model"]  # no temp folder left behind


def test_a_format_1_bundle_saves_as_the_current_format(bundle: Path, tmp_path: Path) -> None:
    """(The current format of a single backbone's bundle: fused backbones need format 4.)"""
    model = headstart.load(bundle)
    copy = model.save(tmp_path / "copy")
    again = headstart.load(copy)
    assert again.tasks == model.tasks and again.classes == model.classes
    assert json.loads((copy / "model.json").read_text())["format_version"] == SINGLE_FORMAT_VERSION
    photos = sorted((demo_data_dir() / "test" / "hat").glob("*.jpg"))[:3]
    np.testing.assert_allclose(again.predict_proba(photos)[0], model.predict_proba(photos)[0])


@pytest.mark.parametrize("run", ["plain_run", "two_task_run", "multilabel_run"])
def test_every_kind_of_model_round_trips(
    run: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    result: FitResult = request.getfixturevalue(run)
    model = result.model
    copy = headstart.load(model.save(tmp_path / "copy"))
    assert copy.tasks == model.tasks
    for task in model.tasks:
        thresholds = model.thresholds(task)
        if thresholds is not None:
            np.testing.assert_array_equal(copy.thresholds(task), thresholds)
    photos = sorted(result.manifest.root.rglob("*.jpg"))[:4]
    mine, _ = model.task_proba(photos)
    theirs, _ = copy.task_proba(photos)
    for name in mine:
        np.testing.assert_allclose(theirs[name], mine[name])
    # Model.save keeps the OOD scorer: the same bank, threshold and scores
    assert model.ood is not None and copy.ood == model.ood
    np.testing.assert_array_equal(copy.ood_scores(photos)[0], model.ood_scores(photos)[0])


def test_the_ood_scorer_is_a_listed_verified_file(plain_run: FitResult, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    shutil.copytree(plain_run.bundle_dir, dest)
    info = json.loads((dest / "model.json").read_text())
    assert info["files"]["ood.safetensors"] == file_digest(dest / "ood.safetensors")
    assert info["ood"]["method"] == "knn" and info["ood"]["pass_rate"] == 0.95
    assert info["ood"]["train_rows"] == info["ood"]["bank_rows"] == plain_run.trained_on
    assert 0.0 < info["ood"]["threshold"] < 2.0
    assert read_bundle(dest).ood == plain_run.model.ood
    (dest / "ood.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(BundleError, match=r"ood\.safetensors does not match its sha256"):
        read_bundle(dest)
    (dest / "ood.safetensors").unlink()
    with pytest.raises(BundleError, match=r"ood\.safetensors is missing"):
        read_bundle(dest)


def test_format_2_multi_label_bundles_still_load(multilabel_run: FitResult, tmp_path: Path) -> None:
    """Format 2 kept a multi-label task's binary heads as ``label_heads`` + ``thresholds``."""
    from headstart.heads import export_head

    model = multilabel_run.model
    dest = tmp_path / "v2"
    shutil.copytree(multilabel_run.bundle_dir, dest)
    info = json.loads((dest / "model.json").read_text())
    head = model.heads["label"]
    entry = {"task": model.tasks[0].to_dict(), "label_heads": [], "thresholds": []}
    arrays = {}
    for j, sub in enumerate(head.estimators_):
        sub_arrays, meta = export_head(sub)
        arrays.update({f"0/{j}/{k}": v for k, v in sub_arrays.items()})
        entry["label_heads"].append(meta)
        entry["thresholds"].append(float(head.thresholds_[j]))
    from safetensors.numpy import save_file

    save_file(arrays, str(dest / "head.safetensors"))
    info.update(format_version=2, tasks=[entry])
    info["files"]["head.safetensors"] = file_digest(dest / "head.safetensors")
    (dest / "model.json").write_text(json.dumps(info))
    old = headstart.load(dest)
    photos = sorted(multilabel_run.manifest.root.rglob("*.jpg"))[:4]
    np.testing.assert_allclose(old.predict_proba(photos)[0], model.predict_proba(photos)[0])
    np.testing.assert_array_equal(old.thresholds(old.tasks[0]), head.thresholds_)
