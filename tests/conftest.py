"""Shared fixtures.  Real data under ../shared/data is used when present and skipped otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data sets beside the checkout; tests using it skip in a user's clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"no shared data at {SHARED_DATA} (only present on the project's machines and CI)"
        )
    return SHARED_DATA


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private embedding cache for the test, so tests never touch the user's cache."""
    path = tmp_path / "cache"
    monkeypatch.setenv("HEADSTART_CACHE", str(path))
    return path
