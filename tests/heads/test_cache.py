"""Fitted heads are cached by class, params, embeddings and targets: a refit of the same data loads
the identical head; any change in the inputs, or a damaged entry, fits again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from headstart.heads import LogisticHead, create_head
from headstart.heads.cache import fit_cached


@pytest.fixture()
def data() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (30, 16)), rng.normal(1.5, 1, (30, 16))]).astype(
        np.float32
    )
    return x, ["a"] * 30 + ["b"] * 30


def _fit(x: np.ndarray, y: list[str], root: Path, **params: object) -> object:
    return fit_cached(create_head("logistic", **params), x, y, root / "heads")


def test_second_fit_loads_the_same_head(
    tmp_path: Path, data: tuple[np.ndarray, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = data
    first = _fit(x, y, tmp_path)
    monkeypatch.setattr(LogisticHead, "fit", lambda *a, **k: pytest.fail("refitted"))
    second = _fit(x, y, tmp_path)
    np.testing.assert_allclose(second.predict_proba(x), first.predict_proba(x), atol=1e-12)  # type: ignore[attr-defined]


def test_changed_inputs_fit_again(tmp_path: Path, data: tuple[np.ndarray, list[str]]) -> None:
    x, y = data
    _fit(x, y, tmp_path)
    _fit(x, y[::-1], tmp_path)
    _fit(x + 1, y, tmp_path)
    _fit(x, y, tmp_path, Cs=[0.1])
    assert len(list((tmp_path / "heads").iterdir())) == 4


@pytest.mark.parametrize("damage", ["head.safetensors", "meta.json", "meta.json.sha256"])
def test_damaged_entry_is_reported_and_refitted(
    tmp_path: Path,
    data: tuple[np.ndarray, list[str]],
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A damaged array file or a damaged record (one flipped bit in the JSON could swap the
    classes or the parameters and still parse): the entry is reported, fitted again and
    rewritten."""
    x, y = data
    first = _fit(x, y, tmp_path)
    (entry,) = (tmp_path / "heads").iterdir()
    target = entry / damage
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    target.write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="headstart"):
        again = _fit(x, y, tmp_path)
    assert [r for r in caplog.records if str(entry) in r.getMessage()], caplog.text
    np.testing.assert_allclose(again.predict_proba(x), first.predict_proba(x), atol=1e-12)  # type: ignore[attr-defined]
    caplog.clear()
    _fit(x, y, tmp_path)  # rewritten whole: the next read is clean
    assert not caplog.records


def test_a_multi_label_head_is_cached_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from headstart.heads import MultiLabelHead

    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    Y = (x[:, :3] > 0).astype(np.int8)
    first = fit_cached(MultiLabelHead("logistic"), x, Y, tmp_path)
    monkeypatch.setattr(LogisticHead, "fit", lambda *a, **k: pytest.fail("refitted"))
    second = fit_cached(MultiLabelHead("logistic"), x, Y, tmp_path)
    np.testing.assert_allclose(second.predict_proba(x), first.predict_proba(x), atol=1e-12)
