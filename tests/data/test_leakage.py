"""Near-duplicates across splits: a re-encoded, resized, cropped copy is found; other photos of
the same class are not; --dedupe drops the copy from the evaluation split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

import headstart
from headstart.cli.main import main
from headstart.config import load_config
from headstart.data.leakage import (
    DEFAULT_THRESHOLD,
    check_threshold,
    dedupe,
    find_near_duplicates,
)
from headstart.features import EmbeddingStore
from headstart.features.neighbours import cross_group_pairs
from salt import copy_demo


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, headstart.EmbeddedData]:
    root = tmp_path_factory.mktemp("leak")
    data = root / "data"
    copy_demo(data, ("hat", "shoes"))
    original = sorted((data / "train" / "hat").iterdir())[0]
    image = Image.open(original).convert("RGB")
    w, h = image.size
    copy = image.crop((int(0.05 * w), int(0.05 * h), w, h)).resize((int(0.6 * w), int(0.6 * h)))
    copy.save(data / "test" / "hat" / "copy.jpg", quality=70)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        embedded = headstart.embed_data(
            data, load_config(overrides=["extract.engine=torch"]), progress=False
        )
    return root, original, embedded


def _candidates(root: Path, embedded: headstart.EmbeddedData) -> list[tuple[int, int, float]]:
    """Cross-split candidate pairs as the fit asks the embedding store for them."""
    samples = embedded.manifest.samples
    splits = [s.split for s in samples]
    found = EmbeddingStore(root / "cache").cross_pairs(
        embedded.extraction.keys, [s.sha256 for s in samples], splits, DEFAULT_THRESHOLD
    )
    assert found is not None, "the rows are in the store"
    # the store's answer is the search on the features in memory
    assert found == cross_group_pairs(embedded.features, splits, DEFAULT_THRESHOLD)
    return found


def test_finds_the_modified_copy_and_nothing_else(
    leaky: tuple[Path, Path, headstart.EmbeddedData],
) -> None:
    root, original, embedded = leaky
    pairs = find_near_duplicates(embedded.manifest, _candidates(root, embedded))
    assert [(p.earlier, p.later.name) for p in pairs] == [(original, "copy.jpg")]
    assert pairs[0].earlier_split == "train" and pairs[0].later_split == "test"


def test_dedupe_removes_the_later_copy(leaky: tuple[Path, Path, headstart.EmbeddedData]) -> None:
    root, _, embedded = leaky
    manifest = embedded.manifest
    reduced, rows = dedupe(manifest, find_near_duplicates(manifest, _candidates(root, embedded)))
    assert "copy.jpg" not in {s.path.name for s in reduced.samples}
    assert len(rows) == len(reduced.samples) == len(manifest.samples) - 1
    assert [manifest.samples[i].path for i in rows] == [s.path for s in reduced.samples]
    assert any("near-duplicate of" in p.reason for p in reduced.problems)


def test_fit_warns_writes_pairs_and_dedupes(
    leaky: tuple[Path, Path, headstart.EmbeddedData],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _, _ = leaky
    monkeypatch.setenv("HEADSTART_CACHE", str(root / "cache"))
    run = root / "run"
    args = ["fit", str(root / "data"), "-o", str(run), "-q", "--dedupe", "--no-report"]
    assert main([*args, "--set", "extract.engine=torch", "--set", "eval.n_boot=20"]) == 0
    captured = capsys.readouterr()
    assert "near-duplicate pair" in captured.err and "removed 1 image" in captured.out
    rows = list(csv.DictReader((run / "near_duplicates.csv").open()))
    assert [r["later"] for r in rows] == ["test/hat/copy.jpg"]
    record = json.loads((run / "run.json").read_text())
    assert record["near_duplicates"] == 1 and record["deduped"] == 1


def test_bad_threshold_is_a_config_error(leaky: tuple[Path, Path, headstart.EmbeddedData]) -> None:
    with pytest.raises(headstart.HeadstartError, match="threshold"):
        check_threshold(1.5)
