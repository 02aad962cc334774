"""Slow end-to-end checks on the real data sets in ../shared/data (skipped where absent)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import headstart

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cache_dir")]


def test_hymenoptera_default_fit_reaches_93_percent(shared_data: Path, tmp_path: Path) -> None:
    result = headstart.fit(shared_data / "hymenoptera", tmp_path / "run", progress=False)
    assert [p.path.name for p in result.manifest.problems] == ["imageNotFound.gif"]
    assert result.metrics["val"].n == 153
    assert result.metrics["val"].accuracy.value >= 0.93


def test_clothing_second_fit_is_ten_times_faster(shared_data: Path, tmp_path: Path) -> None:
    data = shared_data / "clothing_small"
    start = time.perf_counter()
    first = headstart.fit(data, tmp_path / "a", progress=False)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = headstart.fit(data, tmp_path / "b", progress=False)
    second_s = time.perf_counter() - start
    assert second.extraction.n_computed == 0
    assert first.metrics["test"].accuracy.value >= 0.8
    # not a timing assertion on a noisy machine: the work skipped is what makes it fast
    print(f"clothing_small: first fit {first_s:.1f} s, second {second_s:.1f} s")


def test_sign_language_unsplit_folder_gets_a_stratified_split(
    shared_data: Path, tmp_path: Path
) -> None:
    result = headstart.fit(shared_data / "sign_language_digits", tmp_path / "run", progress=False)
    assert set(result.metrics) == {"val", "test"}
    assert result.manifest.split_source.startswith("random")
    assert result.metrics["test"].accuracy.value >= 0.6
