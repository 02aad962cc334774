"""The web service: every endpoint, every bad input with its status code (always JSON, never a
500, and the server keeps answering), the bearer token, batching, and ``headstart serve``; for a
plain model, a two-task model (multi-class ``left`` + multi-label ``items``) and a model of one
multi-label task."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

import headstart
import headstart.serve.app as serve_app
from conftest import TINY_CLASSES
from headstart.cli.main import app as cli_app
from headstart.cli.main import main
from headstart.demo import demo_data_dir
from headstart.errors import HeadstartError
from headstart.result import FitResult
from headstart.serve import ALLOWED_FORMATS, Batcher, Limits, decode_upload
from headstart.serve import create_app as create_served_app
from serving import files, photo, png_claiming

#: The Host TestClient sends: allowed on purpose, like a name given with --allow-host.
TEST_HOST = "testserver"
CLASSES = TINY_CLASSES
EASY = ("hat", "shoes")  # photos the four-class model gets right
TOKEN = "correct-horse-battery"
#: The demo classes the composites are made of (each composite shows two of them).
ITEMS = TINY_CLASSES


def create_app(model: headstart.Model, **kwargs: Any) -> FastAPI:
    """The service as the tests' clients reach it (``Host: testserver``)."""
    return create_served_app(model, allow_hosts=[TEST_HOST], **kwargs)


@pytest.fixture(scope="module")
def model(plain_run: FitResult) -> headstart.Model:
    """The session's probe on four demo classes."""
    return plain_run.model


def encoded(fmt: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(model: headstart.Model) -> Iterator[TestClient]:
    limits = Limits(max_request_bytes=2_000_000, max_files=4, max_pixels=10_000_000)
    with TestClient(create_app(model, limits=limits)) as c:
        yield c


@pytest.fixture(scope="module")
def two_task(two_task_run: FitResult) -> headstart.Model:
    """Tasks ``left`` (multi-class) and ``items`` (multi-label)."""
    return two_task_run.model


@pytest.fixture(scope="module")
def multi_label(multilabel_run: FitResult) -> headstart.Model:
    """One multi-label task (the ``items`` column, named "label")."""
    return multilabel_run.model


@pytest.fixture(scope="module")
def composite_photos(composites: Path) -> list[Path]:
    """Four test-split composites (two demo photos side by side; not seen in fitting)."""
    return sorted((composites.parent / "test").glob("*.jpg"))[:4]


def _fake_explanation(
    model: Any, image: Image.Image, method: str, target: str | None, task: str | None = None
) -> Any:
    if method == "nope":
        raise HeadstartError("unknown method 'nope'; known: gradcam")

    class Explanation:
        overlay = image.resize((32, 32))
        heatmap = np.zeros((32, 32))
        label = target or model.task(task).classes[0]
        probability = 0.75

    return Explanation()


# ---- endpoints --------------------------------------------------------------------------------


def test_health_and_page_are_open_and_the_page_is_offline(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    text = page.text.lower()
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert "http://" not in text and "https://" not in text  # no CDN, no web fonts
    assert 'type="file"' in text and "/v1/predict" in text and "/v1/explain" in text


def test_model_info(client: TestClient, model: headstart.Model) -> None:
    info = client.get("/v1/model").json()
    assert info["classes"] == list(CLASSES)
    assert info["tasks"] == [{"name": "label", "classes": list(CLASSES), "multi_label": False}]
    assert info["backbone"]["name"] == "mobilenet_v2"
    assert info["backbone"]["weights_sha256"] == model.info["backbone"]["weights_sha256"]
    assert info["backbone"]["preprocessing"]["crop"] == 224
    assert info["metrics"] == model.info["metrics"] and "cv" in info["metrics"]
    assert info["limits"]["max_files"] == 4


def test_predict_one_photo_matches_the_library(client: TestClient, model: headstart.Model) -> None:
    body = client.post("/v1/predict", files=files(("hat.jpg", photo("hat")))).json()
    (result,) = body["results"]
    assert result["filename"] == "hat.jpg" and result["error"] is None
    assert result["top"][0]["label"] == "hat"
    assert len(result["top"]) == 3  # default top_k=3
    assert result["tasks"] == {"label": {"labels": ["hat"], "top": result["top"]}}
    # the same decode rule and model as `headstart predict`: the same probabilities
    path = sorted((demo_data_dir() / "test" / "hat").glob("*.jpg"))[0]
    expected = model.predict_proba([path])[0][0]
    got = {t["label"]: t["probability"] for t in result["top"]}
    want = [expected[model.classes.index(c)] for c in got]
    assert list(got.values()) == pytest.approx(want, abs=1e-5)
    one = client.post("/v1/predict?top_k=1", files=files(("s.jpg", photo("shoes")))).json()
    assert [t["label"] for t in one["results"][0]["top"]] == ["shoes"]


def test_predict_says_how_unlike_the_training_images_an_upload_is(
    client: TestClient, model: headstart.Model
) -> None:
    """``ood_score`` as the library scores the same file, ``ood`` above the stored threshold; a
    flat colour is flagged; ``/v1/model`` describes the scorer; a failed file has nulls."""
    assert model.ood is not None
    info = client.get("/v1/model").json()["ood"]
    assert info["method"] == "knn" and info["threshold"] == model.ood.threshold
    flat = encoded("PNG", (200, 150))
    sent = files(("hat.jpg", photo("hat")), ("flat.png", flat), ("no.txt", b"hello"))
    hat, foreign, failed = client.post("/v1/predict", files=sent).json()["results"]
    path = sorted((demo_data_dir() / "test" / "hat").glob("*.jpg"))[0]
    want = float(model.ood_scores([path])[0][0])
    assert hat["ood_score"] == pytest.approx(want, abs=1e-5)
    assert hat["ood"] is (hat["ood_score"] > model.ood.threshold)
    assert foreign["ood"] is True and foreign["ood_score"] > model.ood.threshold
    assert foreign["top"]  # it still gets an answer: the flag says how far to trust it
    assert failed["ood_score"] is None and failed["ood"] is None


def test_a_model_without_an_ood_scorer_answers_null(tmp_path: Path) -> None:
    from conftest import FIXTURES

    old = headstart.load(FIXTURES / "bundle_v1")  # written before bundles had a scorer
    with TestClient(create_app(old, explain=False)) as c:
        assert c.get("/v1/model").json()["ood"] is None
        (result,) = c.post("/v1/predict", files=files(("h.jpg", photo("hat")))).json()["results"]
    assert result["top"][0]["label"] == "hat"
    assert result["ood_score"] is None and result["ood"] is None


def test_the_page_warns_about_images_unlike_the_training_ones(client: TestClient) -> None:
    page = client.get("/").text
    assert "This image looks unlike the training images" in page and "r.ood" in page


def test_every_allowed_format_decodes() -> None:
    for fmt in sorted(ALLOWED_FORMATS):
        assert decode_upload(encoded(fmt), Limits()).size == (40, 30), fmt


def test_several_files_get_one_answer_each_in_order(client: TestClient) -> None:
    sent = files(("a.jpg", photo("shoes")), ("b.txt", b"hello"), ("c.jpg", photo("hat")))
    response = client.post("/v1/predict", files=sent)
    assert response.status_code == 200  # some files were usable: errors are per file
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["a.jpg", "b.txt", "c.jpg"]
    assert results[0]["top"][0]["label"] == "shoes" and results[2]["top"][0]["label"] == "hat"
    assert results[1]["status"] == 415 and results[1]["top"] == []


def _chunks(total: int) -> Iterator[bytes]:
    """A valid start of a file part, then more bytes than the limit, without Content-Length."""
    yield b'--abc\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
    for _ in range(total // 65536 + 1):
        yield b"x" * 65536


MULTI = {"Content-Type": "multipart/form-data; boundary=abc"}
BAD_INPUTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("non-image", {"files": files(("a.txt", b"just some text"))}, 415, "allowed"),
    ("zero bytes", {"files": files(("empty.jpg", b""))}, 422, "empty"),
    ("truncated JPEG", {"files": files(("cut.jpg", photo("hat")[:3000]))}, 422, "truncated"),
    ("JPEG header only", {"files": files(("h.jpg", b"\xff\xd8\xff\xe0"))}, 422, ""),
    (
        "huge dimensions",
        {"files": files(("bomb.png", png_claiming(100_000, 100_000)))},
        413,
        "bomb",
    ),
    ("over pixel limit", {"files": files(("big.png", png_claiming(4000, 3000)))}, 413, "bomb"),
    ("format not allowed", {"files": files(("x.ico", encoded("ICO")))}, 415, "allowed"),
    ("JSON body", {"json": {"files": []}}, 415, "multipart/form-data"),
    ("urlencoded form", {"data": {"files": "a"}}, 415, "multipart/form-data"),
    ("no content type", {"content": b"abc"}, 415, "multipart/form-data"),
    ("missing files field", {"files": [("other", ("a.jpg", b"x", "image/jpeg"))]}, 422, "files"),
    ("files field is text", {"files": [("files", (None, b"text"))]}, 422, "must hold files"),
    ("too many files", {"files": files(*[(f"{i}.jpg", b"x") for i in range(5)])}, 413, "files"),
    ("body over limit", {"content": b"x" * 2_100_000, "headers": MULTI}, 413, "limit"),
    ("streamed body over limit", {"content": _chunks(2_100_000), "headers": MULTI}, 413, "limit"),
    ("broken multipart", {"content": b"--zzz\r\nnot a part", "headers": MULTI}, 400, ""),
]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "needle"),
    [b[1:] for b in BAD_INPUTS],
    ids=[b[0] for b in BAD_INPUTS],
)
def test_bad_input_gets_a_json_error_and_the_server_keeps_going(
    client: TestClient, request_kwargs: dict[str, Any], status: int, needle: str
) -> None:
    response = client.post("/v1/predict", **request_kwargs)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]
    after = client.post("/v1/predict", files=files(("ok.jpg", photo("hat"))))
    assert after.status_code == 200 and after.json()["results"][0]["top"][0]["label"] == "hat"


@pytest.mark.parametrize(
    ("query", "needle"), [("top_k=0", "top_k"), ("top_k=abc", "top_k")], ids=["zero", "text"]
)
def test_bad_query_is_422(client: TestClient, query: str, needle: str) -> None:
    response = client.post(f"/v1/predict?{query}", files=files(("a.jpg", photo("hat"))))
    assert response.status_code == 422 and needle in response.json()["error"]


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert client.get("/nope").json() == {"error": "Not Found"}
    assert client.get("/v1/predict").status_code == 405


# ---- token ------------------------------------------------------------------------------------


def test_token_guards_the_api_but_not_health_or_page(model: headstart.Model) -> None:
    with TestClient(create_app(model, token=TOKEN)) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/").status_code == 200
        good = {"Authorization": f"Bearer {TOKEN}"}
        refused = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
        for headers in [*refused, {"Authorization": f"Basic {TOKEN}"}]:
            for response in (
                c.get("/v1/model", headers=headers),
                c.post("/v1/predict", files=files(("a.jpg", photo("hat"))), headers=headers),
                c.post("/v1/explain", files=files(("a.jpg", photo("hat"))), headers=headers),
            ):
                assert response.status_code == 401, headers
                assert response.json() == {"error": "missing or wrong bearer token"}
                assert response.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/model", headers=good).status_code == 200
        ok = c.post("/v1/predict", files=files(("a.jpg", photo("hat"))), headers=good)
        assert ok.json()["results"][0]["top"][0]["label"] == "hat"


def test_empty_token_is_refused(model: headstart.Model) -> None:
    with pytest.raises(HeadstartError, match="empty"):
        create_app(model, token="  ")


# ---- explain ----------------------------------------------------------------------------------


def test_explain_returns_png_or_json(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_app, "explain_image", _fake_explanation)
    one = [("file", ("a.jpg", photo("hat"), "image/jpeg"))]
    png = client.post("/v1/explain", files=one)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (32, 32)
    assert png.headers["x-headstart-label"] == "hat"
    assert png.headers["x-headstart-task"] == "label"
    body = client.post("/v1/explain?format=json&target=shoes", files=one).json()
    assert body["label"] == "shoes" and body["probability"] == 0.75 and body["task"] == "label"
    assert Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"]))).format == "PNG"
    for query, status in [("target=dog", 422), ("method=nope", 422), ("format=gif", 422)]:
        response = client.post(f"/v1/explain?{query}", files=one)
        assert response.status_code == status and "error" in response.json(), query
    two = client.post("/v1/explain", files=files(("a.jpg", photo("hat")), ("b.jpg", photo("hat"))))
    assert two.status_code == 422 and "exactly one" in two.json()["error"]
    bad = client.post("/v1/explain", files=[("file", ("a.txt", b"text", "text/plain"))])
    assert bad.status_code == 415


def test_explain_can_be_turned_off(model: headstart.Model) -> None:
    with TestClient(create_app(model, explain=False)) as c:
        response = c.post("/v1/explain", files=[("file", ("a.jpg", photo("hat"), "image/jpeg"))])
        assert response.status_code == 404 and "turned off" in response.json()["error"]
        assert c.get("/v1/model").json()["explain"] is False


def test_real_gradcam_overlay(client: TestClient) -> None:
    pytest.importorskip("headstart.explain", reason="headstart.explain not available yet")
    response = client.post(
        "/v1/explain?format=json", files=[("file", ("a.jpg", photo("shoes"), "image/jpeg"))]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "shoes"
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"])))
    assert overlay.width > 0 and overlay.height > 0


# ---- tasks: two tasks, one multi-label task -----------------------------------------------------


def _upload(paths: Sequence[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return files(*[(p.name, p.read_bytes()) for p in paths])


def _same_answers(served: dict[str, Any], library: dict[str, Any]) -> None:
    """The service's ``tasks`` equal the library's: the same labels and top-k, the same
    probabilities (the warm runner and the embedding path differ by float noise only)."""
    assert served.keys() == library.keys()
    for name, answer in served.items():
        assert answer["labels"] == library[name]["labels"], name
        assert [t["label"] for t in answer["top"]] == [t["label"] for t in library[name]["top"]]
        got = [t["probability"] for t in answer["top"]]
        assert got == pytest.approx([t["probability"] for t in library[name]["top"]], abs=1e-5)


def test_two_task_model_answers_every_task(
    two_task: headstart.Model, composite_photos: list[Path]
) -> None:
    with TestClient(create_app(two_task)) as c:
        assert c.get("/healthz").json() == {"status": "ok", "classes": 4, "tasks": 2}
        info = c.get("/v1/model").json()
        assert info["classes"] == list(ITEMS)  # the first task's, as before tasks
        left, items = info["tasks"]
        assert left == {"name": "left", "classes": list(ITEMS), "multi_label": False}
        assert items["name"] == "items" and items["multi_label"] is True
        thresholds = two_task.thresholds(two_task.task("items"))
        assert thresholds is not None
        assert items["thresholds"] == pytest.approx(thresholds.tolist(), abs=1e-6)
        assert "tasks: left, items" in c.get("/").text
        body = c.post("/v1/predict?top_k=2", files=_upload(composite_photos)).json()
    expected = two_task.predict(composite_photos, top_k=2)
    for result, prediction in zip(body["results"], expected, strict=True):
        assert result["error"] is None and result["status"] == 200
        assert result["top"] == result["tasks"]["left"]["top"]  # "top": the first task's
        assert len(result["tasks"]["left"]["labels"]) == 1
        _same_answers(result["tasks"], prediction.to_dict()["tasks"])
        scores = {t["label"]: t["probability"] for t in result["tasks"]["items"]["top"]}
        for label in result["tasks"]["items"]["labels"]:  # chosen at or above its threshold
            assert scores[label] >= thresholds[ITEMS.index(label)] - 1e-6


def test_multi_label_model_uses_its_thresholds_and_may_choose_nothing(
    multi_label: headstart.Model, composite_photos: list[Path]
) -> None:
    with TestClient(create_app(multi_label)) as c:
        (task,) = c.get("/v1/model").json()["tasks"]
        assert task["multi_label"] is True and len(task["thresholds"]) == len(ITEMS)
        body = c.post("/v1/predict", files=_upload(composite_photos[:2])).json()
    expected = multi_label.predict(composite_photos[:2])
    for result, prediction in zip(body["results"], expected, strict=True):
        _same_answers(result["tasks"], prediction.to_dict()["tasks"])
        assert result["top"] == result["tasks"]["label"]["top"]
    # thresholds no probability reaches: the answer is no label at all, still with a top-k
    assert multi_label.path is not None
    strict = headstart.load(multi_label.path, cache=multi_label.cache)
    strict.heads["label"].thresholds_ = np.full(len(ITEMS), 1.01)
    with TestClient(create_app(strict)) as c:
        (result,) = c.post("/v1/predict", files=_upload(composite_photos[:1])).json()["results"]
    assert result["tasks"]["label"]["labels"] == [] and len(result["tasks"]["label"]["top"]) == 3
    assert result["error"] is None


def test_explain_picks_the_task(
    two_task: headstart.Model, composite_photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []

    def fake(model: Any, image: Image.Image, **kw: Any) -> Any:
        seen.append(kw["task"])
        return _fake_explanation(model, image, **kw)

    monkeypatch.setattr(serve_app, "explain_image", fake)
    one = [("file", ("c.jpg", composite_photos[0].read_bytes(), "image/jpeg"))]
    with TestClient(create_app(two_task)) as c:
        default = c.post("/v1/explain?format=json", files=one).json()
        items = c.post("/v1/explain?format=json&task=items&target=shoes", files=one).json()
        png = c.post("/v1/explain?task=items", files=one)
        refused = {
            q: c.post(f"/v1/explain?{q}", files=one)
            for q in ("task=colour", "task=items&target=dog", "target=dog")
        }
    assert seen == ["left", "items", "items"]
    assert default["task"] == "left" and items["task"] == "items" and items["label"] == "shoes"
    assert png.headers["x-headstart-task"] == "items"
    for query, response in refused.items():
        assert response.status_code == 422, query
    assert "unknown task 'colour'" in refused["task=colour"].json()["error"]
    assert "left, items" in refused["task=colour"].json()["error"]
    assert "of task 'items'" in refused["task=items&target=dog"].json()["error"]


def test_real_gradcam_of_a_multi_label_task(
    two_task: headstart.Model, composite_photos: list[Path]
) -> None:
    one = [("file", ("c.jpg", composite_photos[0].read_bytes(), "image/jpeg"))]
    with TestClient(create_app(two_task)) as c:
        response = c.post("/v1/explain?format=json&task=items&target=hat", files=one)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "items" and body["label"] == "hat" and 0 <= body["probability"] <= 1
    assert Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"]))).width > 0


# ---- batching ---------------------------------------------------------------------------------


def test_concurrent_requests_are_batched_with_independent_answers(model: headstart.Model) -> None:
    app = create_app(model, limits=Limits(max_wait_ms=50))
    photos = [(cls, photo(cls, i)) for i in range(3) for cls in EASY]
    resize = model.backbone_ref.preprocessing.resize
    decoded = [decode_upload(p, Limits(), resize) for _, p in photos]
    expected = model.predict_images(decoded)[model.tasks[0].name]

    async def run() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{TEST_HOST}") as c:
            posts = [
                c.post("/v1/predict", files=files((f"{i}.jpg", p)))
                for i, (_, p) in enumerate(photos)
            ]
            responses = await asyncio.gather(*posts)
        await app.state.batcher.close()
        return [r.json()["results"][0] for r in responses]

    results = asyncio.run(run())
    for (cls, _), result, row in zip(photos, results, expected, strict=True):
        assert result["top"][0]["label"] == cls
        got = {t["label"]: t["probability"] for t in result["top"]}
        want = [row[model.classes.index(c)] for c in got]
        assert list(got.values()) == pytest.approx(want, abs=1e-4)
    stats = app.state.batcher.stats
    assert stats.images == len(photos) and stats.largest > 1  # arrived together, ran together


def test_batcher_hands_each_caller_its_row_and_survives_a_failing_batch() -> None:
    calls: list[int] = []

    def predict(images: Sequence[Any]) -> np.ndarray:
        calls.append(len(images))
        if any(i < 0 for i in images):
            raise RuntimeError("model broke")
        time.sleep(0.01)
        return np.array([[float(i)] for i in images])

    async def run() -> tuple[list[float], str]:
        batcher = Batcher(predict, max_batch=4, max_wait_s=0.02)
        rows = await asyncio.gather(*(batcher.predict(i) for i in range(10)))
        try:
            await batcher.predict(-1)
            failure = ""
        except RuntimeError as exc:
            failure = str(exc)
        again = await batcher.predict(7)
        await batcher.close()
        return [float(r[0]) for r in [*rows, again]], failure

    values, failure = asyncio.run(run())
    assert values == [*range(10), 7.0]
    assert failure == "model broke"
    assert max(calls) == 4 and sum(calls[:3]) == 10  # 4 + 4 + 2, never more than max_batch


# ---- CLI --------------------------------------------------------------------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_cli_refuses_bad_tokens_with_one_line(
    model: headstart.Model,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = str(model.path)
    _one_line_error(capsys, ["serve", bundle, "--token-file", str(tmp_path / "nope")], "nope")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    _one_line_error(capsys, ["serve", bundle, "--token-file", str(empty)], "empty")
    monkeypatch.setenv("HEADSTART_TOKEN", " ")
    _one_line_error(capsys, ["serve", bundle], "HEADSTART_TOKEN")
    monkeypatch.delenv("HEADSTART_TOKEN")
    _one_line_error(capsys, ["serve", str(tmp_path / "nomodel")], "nomodel")
    _one_line_error(capsys, ["serve", bundle, "--port", "0"], "port")


def test_cli_has_no_token_option() -> None:
    """A token on the command line would show in ``ps`` and shell history."""
    serve = typer.main.get_command(cli_app).commands["serve"]  # type: ignore[attr-defined]
    options = {o for p in serve.params for o in getattr(p, "opts", [])}
    assert "--token-file" in options and not any(o == "--token" for o in options)


def test_cli_serves_with_the_token_from_the_file(
    model: headstart.Model,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    started: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    argv = ["serve", str(model.path), "--port", "8123", "--token-file", str(token_file)]
    assert main(argv) == 0
    assert "http://127.0.0.1:8123/" in capsys.readouterr().out
    assert started["host"] == "127.0.0.1" and started["port"] == 8123
    with TestClient(started["app"], base_url="http://127.0.0.1:8123") as c:
        assert c.get("/v1/model").status_code == 401
        good = c.get("/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.json()["classes"] == list(CLASSES)
