"""Serving a text model: ``POST /v1/predict`` with JSON texts (answers, OOD verdicts, per-text
errors, the limits, files refused), ``/v1/explain`` word attributions, ``/v1/model`` saying
``modality``, the page's text box, and an image model refusing JSON texts.  A real MiniLM
probe fitted on three classes of eight sentences written here."""

from __future__ import annotations

import asyncio
import csv
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import headstart
from browser import CHROMIUM, CHROMIUM_ARGS
from headstart.result import FitResult
from headstart.serve import Limits
from headstart.serve import create_app as create_served_app
from serving import files, photo, serving
from texts import SUPPORT_SENTENCES as SENTENCES

TEST_HOST = "testserver"
SCREENSHOT_FOR_REVIEW = Path("/tmp/serve_text_page.png")
OOD_SCREENSHOT_FOR_REVIEW = Path("/tmp/serve_text_page_ood.png")
TYPED = "Help! My password is wrong and I cannot log in 🙁"


def write_texts(path: Path) -> Path:
    """A CSV of the sentences: columns ``text`` and ``category``."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        for label, texts in SENTENCES.items():
            writer.writerows([text, label] for text in texts)
    return path


def fit_texts(folder: Path, cache: Path, strategy: str | None = None) -> FitResult:
    """A MiniLM probe on the sentences (the encoder's ONNX export cached in ``cache``);
    ``strategy="tfidf"``: the TF-IDF baseline (no encoder)."""
    from headstart.config import load_config

    overrides = [
        f"extract.cache_dir={cache}",
        "eval.n_boot=50",
        "data.text_column=text",
        "data.label_column=category",
    ]
    config = load_config(overrides=overrides)
    data = write_texts(folder / "texts.csv")
    return headstart.fit(
        data, folder / "run", config=config, progress=False, report=False, strategy=strategy
    )


def create_app(model: headstart.Model, **kwargs: Any) -> FastAPI:
    """The service as the tests' clients reach it (``Host: testserver``)."""
    return create_served_app(model, allow_hosts=[TEST_HOST], **kwargs)


@pytest.fixture(scope="module")
def model(shared_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> headstart.Model:
    return fit_texts(tmp_path_factory.mktemp("text-serve"), shared_cache).model


@pytest.fixture(scope="module")
def client(model: headstart.Model) -> Iterator[TestClient]:
    limits = Limits(max_texts=4, max_text_chars=200, max_request_bytes=100_000)
    with TestClient(create_app(model, limits=limits)) as c:
        yield c


def test_json_texts_get_every_answer(client: TestClient, model: headstart.Model) -> None:
    texts = ["my card got declined at the store", "  I forgot my password again  "]
    r = client.post("/v1/predict?top_k=2", json={"texts": texts})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [0, 1]
    assert [x["top"][0]["label"] for x in results] == ["card", "password"]
    assert results[1]["text"] == "I forgot my password again"  # stripped, as predict does
    first = results[0]
    assert first["error"] is None and first["status"] == 200 and len(first["top"]) == 2
    assert first["tasks"]["label"]["labels"] == ["card"]
    assert isinstance(first["ood_score"], float) and isinstance(first["ood"], bool)
    # the same probabilities as Model.predict
    expected = model.predict(texts, top_k=2)
    for got, want in zip(results, expected, strict=True):
        assert got["top"][0]["probability"] == pytest.approx(want.top[0][1], abs=1e-5)
        assert got["ood_score"] == pytest.approx(want.ood_score, abs=1e-5)


def test_one_text_field_and_per_text_errors(client: TestClient) -> None:
    r = client.post("/v1/predict", json={"text": "transfer money abroad"})
    assert r.status_code == 200 and r.json()["results"][0]["top"][0]["label"] == "transfer"
    r = client.post("/v1/predict", json={"texts": ["   ", "reset my password"]})
    assert r.status_code == 200
    empty, ok = r.json()["results"]
    assert empty["error"] == "empty text" and empty["status"] == 422 and empty["top"] == []
    assert ok["error"] is None
    r = client.post("/v1/predict", json={"texts": ["", " "]})  # nothing usable: 422
    assert r.status_code == 422 and r.json()["error"] == "texts[0]: empty text"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"texts": ["a"] * 5}, 413, "too many texts: 5, over the limit of 4"),
        ({"texts": ["ok", "x" * 201]}, 413, "texts[1] has 201 characters"),
        ({"texts": []}, 422, "'texts' is empty"),
        ({"texts": "just one"}, 422, "'texts' must be a list"),
        ({"texts": ["fine", 3]}, 422, "texts[1] must be a string"),
        ({"words": ["x"]}, 422, "no 'texts' list"),
        (["not", "an", "object"], 422, "must be a JSON object"),
    ],
)
def test_bad_json_bodies_are_named(client: TestClient, body: Any, status: int, needle: str) -> None:
    r = client.post("/v1/predict", json=body)
    assert r.status_code == status and needle in r.json()["error"], r.text


def test_what_is_not_json_texts_is_refused(client: TestClient) -> None:
    r = client.post(
        "/v1/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.post("/v1/predict", files=files(("hat.jpg", photo())))
    assert r.status_code == 415
    assert "classifies texts, not files" in r.json()["error"]
    r = client.post("/v1/predict", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    big = {"texts": ["y" * 150_000]}  # over the body limit before any parsing
    assert client.post("/v1/predict", json=big).status_code == 413
    assert client.get("/healthz").status_code == 200  # and the server keeps answering


def test_model_info_and_page(client: TestClient) -> None:
    info = client.get("/v1/model").json()
    assert info["modality"] == "text" and info["classes"] == ["card", "password", "transfer"]
    assert info["limits"]["max_texts"] == 4 and info["limits"]["max_text_chars"] == 200
    page = client.get("/").text
    assert '<textarea id="text"' in page and ">Classify</button>" in page
    assert "maxlength='200'" in page and 'id="drop"' not in page


def test_explain_gives_word_attributions(client: TestClient) -> None:
    r = client.post("/v1/explain", json={"text": "please help, my password is wrong"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "occlusion" and body["target"] == "password"
    words = {w["word"]: w["score"] for w in body["words"]}
    assert max(words, key=lambda w: words[w]) == "password"
    assert body["words"][0] == {"word": "please", "start": 0, "end": 6, "score": words["please"]}
    r = client.post("/v1/explain?target=card", json={"text": "my password is wrong"})
    assert r.status_code == 200 and r.json()["target"] == "card"
    r = client.post("/v1/explain", json={"text": "x", "target": "zebra"})
    assert r.status_code == 422 and "unknown target class 'zebra'" in r.json()["error"]
    r = client.post("/v1/explain", json={"text": "   "})
    assert r.status_code == 422 and "empty text" in r.json()["error"]
    r = client.post("/v1/explain", json={"texts": ["x"]})
    assert r.status_code == 422 and 'send {"text"' in r.json()["error"]


def test_concurrent_texts_are_batched(model: headstart.Model) -> None:
    app = create_app(model, limits=Limits(max_batch=8, max_wait_ms=200))

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{TEST_HOST}") as c:
            await app.state.batcher.run(model.score_texts, ["warm up"])
            texts = [f"my card number {i} was declined" for i in range(6)]
            calls = [c.post("/v1/predict", json={"texts": [t]}) for t in texts]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert {r.json()["results"][0]["top"][0]["label"] for r in responses} == {"card"}
    stats = app.state.batcher.stats
    assert stats.images == 6 and stats.largest > 1


def test_a_tfidf_model_is_served_and_explained(
    shared_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The TF-IDF baseline reads the words themselves: occlusion explains it all the same."""
    run = fit_texts(tmp_path_factory.mktemp("tfidf"), shared_cache, strategy="tfidf")
    with TestClient(create_app(run.model)) as c:
        assert c.get("/v1/model").json()["modality"] == "text"
        r = c.post("/v1/predict", json={"texts": ["my card was declined", "forgot password"]})
        assert [x["top"][0]["label"] for x in r.json()["results"]] == ["card", "password"]
        r = c.post("/v1/explain", json={"text": "my card was declined"})
        words = {w["word"]: w["score"] for w in r.json()["words"]}
        assert max(words, key=lambda w: words[w]) == "card"


def test_an_image_model_refuses_json_texts(plain_run: FitResult) -> None:
    with TestClient(create_app(plain_run.model)) as c:
        r = c.post("/v1/predict", json={"texts": ["a hat"]})
        assert r.status_code == 415 and "classifies images" in r.json()["error"]
        assert c.get("/v1/model").json()["modality"] == "image"
        assert "<textarea" not in c.get("/").text


@pytest.fixture()
def server(model: headstart.Model) -> Iterator[str]:
    """The text model behind a real uvicorn server in a thread."""
    for port in serving(create_app(model)):
        yield f"http://127.0.0.1:{port}"


def test_page_classifies_typed_text_and_colours_its_words(
    model: headstart.Model, server: str, tmp_path: Path
) -> None:
    """In Chromium: type a text, press Classify, see the answer with bars and the words
    coloured by attribution (the discriminative word in green); then an out-of-place text gets
    the OOD warning above its answer."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    odd = "Photosynthesis converts sunlight into chemical energy in chloroplasts."
    (flagged,) = model.predict([odd])
    assert flagged.ood  # the page must show the warning for it
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 700})
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(server + "/")
            sync_api.expect(page.locator("#subtitle")).to_contain_text("3 classes")
            page.fill("#text", TYPED)
            page.click("#classify")
            page.wait_for_selector("#answers .row", timeout=60_000)
            assert (page.text_content("#answers .top") or "").startswith("password")
            assert page.locator("#answers .row").count() == 3
            assert page.locator("#ood-warning").count() == 0
            page.wait_for_selector("#words .w", timeout=60_000)
            sync_api.expect(page.locator("#caption")).to_contain_text("words for password")
            words = page.locator("#words .w")
            scores = {
                words.nth(i).text_content(): float(words.nth(i).get_attribute("data-score") or 0)
                for i in range(words.count())
            }
            assert max(scores, key=lambda w: scores[w]) == "password"
            # the text is shown whole, emoji included (offsets count code points)
            assert (
                page.text_content("#words") == "Help! My password is wrong and I cannot log in 🙁"
            )
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copyfile(shot, SCREENSHOT_FOR_REVIEW)
            page.fill("#text", odd)
            page.keyboard.press("Control+Enter")
            warning = page.locator("#ood-warning")
            sync_api.expect(warning).to_be_visible(timeout=60_000)
            assert "unlike the training texts" in (warning.text_content() or "")
            page.wait_for_selector("#words .w", timeout=60_000)
            page.screenshot(path=str(tmp_path / "ood.png"), full_page=True)
            shutil.copyfile(tmp_path / "ood.png", OOD_SCREENSHOT_FOR_REVIEW)
            assert page.text_content("#status") == ""
            assert failed == []
        finally:
            browser.close()
