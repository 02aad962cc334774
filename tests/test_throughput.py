"""``headstart backbones --speed``: each usable built-in's images/s here, remembered per
machine in a verified cache entry and shown by later listings without measuring again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headstart import throughput
from headstart.backbones import resolve_backbone
from headstart.cache import CacheRoot
from headstart.cli.main import main


def test_a_measured_speed_is_remembered_and_listed(
    plain_run: Any, shared_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setattr(throughput, "SECONDS", 0.2)
    cache = CacheRoot.of(shared_cache)  # the plain run exported mobilenet_v2's ONNX here
    ref = resolve_backbone("mobilenet_v2")
    rate = throughput.measure(ref, cache)
    assert rate > 0
    assert throughput.remembered([ref], cache) == {"mobilenet_v2": pytest.approx(rate)}
    monkeypatch.setenv("HEADSTART_CACHE", str(shared_cache))
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["backbones"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "mobilenet_v2" in line)
    assert f"{rate:.0f}" in row.split("│")[5]


def test_a_damaged_record_is_measured_again(shared_cache: Path, tmp_path: Path) -> None:
    cache = CacheRoot.of(tmp_path)
    (tmp_path / "throughput.json").write_text("{not json")
    assert throughput.remembered([resolve_backbone("mobilenet_v2")], cache) == {}
