"""Word attributions of a text model by occlusion: the discriminative word of a constructed text
gets the largest attribution (for each of two targets), every variant goes through the encoder
in one call, the HTML and terminal renderings, ``headstart explain`` on texts, and what is
refused.  A real MiniLM probe on three classes of eight sentences written here."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import headstart
from conftest import FIXTURES
from headstart.cli.main import main
from headstart.errors import ConfigError, DataError
from headstart.explain import text as text_explain
from headstart.explain.text import explain_text, render_html, save_html, words_of
from texts import SUPPORT_SENTENCES as SENTENCES

#: Two classes' words in one text: each target must rest on its own word.
MIXED = "Yesterday my card broke, and today the password is gone too."


def _fit(shared_cache: Path, folder: Path, strategy: str | None = None) -> headstart.Model:
    from headstart.config import load_config

    data = folder / "texts.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        for label, texts in SENTENCES.items():
            writer.writerows([text, label] for text in texts)
    overrides = [
        f"extract.cache_dir={shared_cache}",
        "eval.n_boot=50",
        "data.text_column=text",
        "data.label_column=category",
    ]
    config = load_config(overrides=overrides)
    run = headstart.fit(
        data, folder / "run", config=config, progress=False, report=False, strategy=strategy
    )
    return run.model


@pytest.fixture(scope="module")
def model(shared_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> headstart.Model:
    return _fit(shared_cache, tmp_path_factory.mktemp("text-explain"))


def _best(expl: text_explain.TextExplanation) -> str:
    return expl.top_words(1)[0][0]


def test_the_discriminative_word_gets_the_largest_attribution(model: headstart.Model) -> None:
    card = explain_text(model, MIXED, "card")
    password = explain_text(model, MIXED, "password")
    assert _best(card) == "card" and _best(password) == "password"
    # each class's word argues against the other class
    words = card.words
    assert card.scores[words.index("password")] < 0 < card.scores[words.index("card")]
    assert password.scores[words.index("card")] < 0 < password.scores[words.index("password")]
    plain = explain_text(model, "  please help, my password is wrong ")
    assert plain.target == plain.predicted == "password" and _best(plain) == "password"
    assert plain.text == "please help, my password is wrong"  # stripped, as predict does
    (answer,) = model.predict([plain.text])
    assert plain.probability == pytest.approx(answer.top[0][1], abs=1e-6)


def test_words_offsets_and_json(model: headstart.Model) -> None:
    expl = explain_text(model, "Don't block my card, l'app says so!", task="label")
    assert expl.words == ["Don't", "block", "my", "card", "l'app", "says", "so"]
    assert [expl.text[s:e] for s, e in expl.spans] == expl.words
    body = expl.to_dict()
    assert body["method"] == "occlusion" and body["task"] == "label"
    assert body["words"][3] == {
        "word": "card",
        "start": 15,
        "end": 19,
        "score": body["words"][3]["score"],
    }
    assert all(isinstance(w["score"], float) for w in body["words"])
    assert words_of("") == [] and words_of("a-b") == [(0, 1), (2, 3)]


def test_every_variant_goes_through_the_encoder_at_once(
    model: headstart.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = model.score_texts

    def counted(texts: Any) -> Any:
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(model, "score_texts", counted)
    explain_text(model, "my card was declined")
    assert calls == [5]  # the text and one variant per word
    calls.clear()
    monkeypatch.setattr(text_explain, "MAX_WORDS", 2)  # only the first words are scored
    expl = explain_text(model, "my card was declined")
    assert calls == [3] and np.isnan(expl.scores[2:]).all()
    assert expl.to_dict()["words"][3]["score"] is None
    calls.clear()
    one = explain_text(model, "password")  # removed, nothing is left: "." stands in
    assert calls == [2] and one.words == ["password"] and one.scores[0] > 0


def test_html_is_self_contained_and_escaped(model: headstart.Model, tmp_path: Path) -> None:
    expl = explain_text(model, "my <b>card</b> & my password")
    page = render_html([expl, explain_text(model, MIXED, "card")], title="why?")
    assert "<script" not in page and "http" not in page
    assert "&lt;" in page and "&amp;" in page and "my <b>" not in page  # the text, escaped
    assert page.count("<section>") == 2 and 'class="w"' in page
    written = save_html([expl], tmp_path / "out" / "why.html")
    assert written.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_refusals(model: headstart.Model) -> None:
    with pytest.raises(ConfigError, match="unknown target class 'zebra'; known: card"):
        explain_text(model, "my card", "zebra")
    with pytest.raises(ConfigError, match="unknown task"):
        explain_text(model, "my card", task="nope")
    with pytest.raises(DataError, match="empty text"):
        explain_text(model, "   ")
    image_model = headstart.load(FIXTURES / "bundle_v1")
    with pytest.raises(ConfigError, match="classifies images"):
        explain_text(image_model, "a photo")


def test_cli_colours_words_and_writes_html(
    model: headstart.Model,
    shared_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert model.path is not None
    monkeypatch.setenv("HEADSTART_CACHE", str(shared_cache))  # the encoder's export is there
    out = tmp_path / "why.html"
    code = main(
        ["explain", str(model.path), MIXED, "reset my password", "-t", "card", "-o", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "card" in printed and "words for it: card" in printed and f"wrote {out}" in printed
    assert out.read_text(encoding="utf-8").count("<section>") == 2
    assert main(["explain", str(model.path), "x", "--method", "gradcam"]) == 2
    err = capsys.readouterr().err.strip()
    assert "explained by occlusion" in err and len(err.splitlines()) == 1
    assert main(["explain", str(model.path), "x", "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_a_tfidf_model_is_explained_and_not_exported(shared_cache: Path, tmp_path: Path) -> None:
    """The TF-IDF baseline has no network: occlusion needs none, an ONNX export does."""
    from headstart.export import export_model

    tfidf = _fit(shared_cache, tmp_path, strategy="tfidf")
    card = explain_text(tfidf, MIXED, "card")
    assert _best(card) == "card"
    assert tfidf.path is not None
    with pytest.raises(ConfigError, match="no encoder network to export"):
        export_model(tfidf.path)
    assert not (tfidf.path / "model.onnx").exists()
