"""Shared fixtures: one tiny real data set (four classes of the bundled demo photos), its
two-task composites, one embedding cache and one fitted model of each kind for the whole
session, so every test file reuses them instead of embedding and fitting its own.

Real data under ../shared/data is used when present and skipped otherwise."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY_CLASSES = ("hat", "pants", "shoes", "t-shirt")


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
    """A private default cache for the test, so tests never touch the user's cache."""
    path = tmp_path / "cache"
    monkeypatch.setenv("HEADSTART_CACHE", str(path))
    return path


@pytest.fixture(scope="session", autouse=True)
def _no_user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test may read or write the user's cache: the default root points at a session
    folder unless a test sets its own."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HEADSTART_CACHE", str(tmp_path_factory.mktemp("default-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the session's fits of the tiny data (each image embedded once)."""
    return tmp_path_factory.mktemp("shared-cache")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four demo classes with their train/validation/test folders (real photos, 128 images)."""
    from salt import copy_demo

    return copy_demo(tmp_path_factory.mktemp("tiny") / "clothes", TINY_CLASSES)


@pytest.fixture(scope="session")
def composites(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labels.csv of two-photo composites of the tiny data: ``left`` (multi-class) and
    ``items`` (multi-label) columns, train/val/test as the photos'."""
    from headstart.data.compose import compose_pairs

    return compose_pairs(tiny_data, tmp_path_factory.mktemp("composites"), per_image=2.0, size=96)


def fit_run(data: Path, out: Path, cache: Path, *overrides: str, **kwargs: object) -> object:
    """``headstart.fit`` with the given cache, few bootstrap resamples and ``overrides``."""
    import headstart
    from headstart.config import load_config

    config = load_config(overrides=[f"extract.cache_dir={cache}", "eval.n_boot=200", *overrides])
    return headstart.fit(data, out, config=config, progress=False, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def plain_run(tiny_data: Path, shared_cache: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A probe fitted on the tiny data (one multi-class task), with its report."""
    return fit_run(tiny_data, tmp_path_factory.mktemp("runs") / "plain", shared_cache)


@pytest.fixture(scope="session")
def two_task_run(composites: Path, shared_cache: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A probe fitted on the composites with two tasks: ``left`` and ``items`` (multi-label)."""
    out = tmp_path_factory.mktemp("runs") / "two"
    return fit_run(composites, out, shared_cache, "data.label_column=[left,items]")


@pytest.fixture(scope="session")
def multilabel_run(composites: Path, shared_cache: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A probe fitted on the composites' ``items`` column: one multi-label task."""
    out = tmp_path_factory.mktemp("runs") / "items"
    return fit_run(composites, out, shared_cache, "data.label_column=items", report=False)


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the session's real-data tests (each data set embedded once)."""
    return tmp_path_factory.mktemp("real-cache")


@pytest.fixture(scope="session")
def tiny_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights of timm's ``test_efficientnet`` (a network small enough to fine-tune in
    seconds): pass ``-b timm:test_efficientnet --weights FILE``."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    weights = tmp_path_factory.mktemp("tiny-net") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    return weights


@pytest.fixture()
def deny_folder(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Make listing the given folders fail with EACCES, as chmod 000 does for a user (tests
    may run as root, where chmod stops nothing)."""
    denied: set[str] = set()
    real = os.scandir

    def scandir(path: str | os.PathLike[str] = ".") -> Iterator[os.DirEntry[str]]:
        if os.fspath(path) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)  # type: ignore[return-value]

    monkeypatch.setattr(os, "scandir", scandir)
    return lambda path: denied.add(str(path))
