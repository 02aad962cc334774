"""The page at ``/`` in a real browser: a person chooses a photo and sees the prediction, the
probability bars and the Grad-CAM overlay, for a plain model and for a two-task model (one block
per task; headless Chromium driven by Playwright, real uvicorn on a free loopback port)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import headstart
from browser import CHROMIUM, CHROMIUM_ARGS
from headstart.demo import demo_data_dir
from headstart.result import FitResult
from headstart.serve import create_app
from serving import serving

SCREENSHOT_FOR_REVIEW = Path("/tmp/serve_page.png")
TASKS_SCREENSHOT_FOR_REVIEW = Path("/tmp/serve_page_tasks.png")
OOD_SCREENSHOT_FOR_REVIEW = Path("/tmp/serve_page_ood.png")
TOKEN = "page-test-token"
ITEMS = ("hat", "pants", "shoes", "t-shirt")


@pytest.fixture(scope="module")
def model(plain_run: FitResult) -> headstart.Model:
    """The session's probe on four demo classes."""
    return plain_run.model


@pytest.fixture(scope="module")
def two_task(two_task_run: FitResult) -> headstart.Model:
    """The session's two-task model (``left`` multi-class, ``items`` multi-label)."""
    return two_task_run.model


def _serve(app: Any) -> Iterator[str]:
    for port in serving(app):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(model: headstart.Model) -> Iterator[str]:
    """A real uvicorn server in a thread, with a token (the page must ask for it)."""
    yield from _serve(create_app(model, token=TOKEN))


@pytest.fixture(scope="module")
def tasks_server(two_task: headstart.Model) -> Iterator[str]:
    """The two-task model served without a token."""
    yield from _serve(create_app(two_task))


def _overlay_decoded(page: Any) -> bool:
    overlay = page.locator("#overlay")
    deadline = time.monotonic() + 10
    while not overlay.evaluate("o => o.complete && o.naturalWidth") and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    return bool(overlay.evaluate("o => o.naturalWidth") > 0)  # the PNG decoded in the page


def test_page_predicts_a_dropped_photo_and_shows_the_overlay(server: str, tmp_path: Path) -> None:
    pytest.importorskip("headstart.explain", reason="headstart.explain not available")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    photo = sorted((demo_data_dir() / "test" / "shoes").glob("*.jpg"))[0]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(server + "/")
            page.fill("#token", TOKEN)  # the server wants a token: the page shows the field
            page.click("#save-token")
            # the page runs under a strict CSP (no eval), so waits use locators, not JS strings
            sync_api.expect(page.locator("#subtitle")).to_contain_text("4 classes")
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#answers .row", timeout=60_000)
            # a plain model looks as before tasks: one answer, no task heading
            assert page.locator("#answers .task").count() == 1
            assert page.locator("#answers h3").count() == 0
            assert (page.text_content("#answers .top") or "").startswith("shoes")
            assert page.locator("#answers .row").count() == 4
            assert page.locator("#explain-pick").is_hidden()  # one task: nothing to pick
            page.wait_for_selector("#overlay:not([hidden])", timeout=120_000)
            assert _overlay_decoded(page)
            assert "shoes" in (page.text_content("#caption") or "")
            assert page.text_content("#status") == ""  # no error shown
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            shutil.copyfile(shot, SCREENSHOT_FOR_REVIEW)
            assert failed == []  # everything the page loaded came from this server
        finally:
            browser.close()


def test_page_warns_when_an_image_is_unlike_the_training_images(
    server: str, model: headstart.Model, tmp_path: Path
) -> None:
    """A flat grey picture gets the warning above its (still shown) answer; a photo of a
    trained class gets none when the model passes it."""
    from PIL import Image

    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    flat = tmp_path / "flat.png"
    Image.new("RGB", (300, 200), (120, 120, 120)).save(flat)
    hat = sorted((demo_data_dir() / "test" / "hat").glob("*.jpg"))[0]
    (flagged,) = model.predict([hat])
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.goto(server + "/")
            page.fill("#token", TOKEN)
            page.click("#save-token")
            sync_api.expect(page.locator("#subtitle")).to_contain_text("4 classes")
            page.set_input_files("#file", str(flat))
            page.wait_for_selector("#answers .row", timeout=60_000)
            warning = page.locator("#ood-warning")
            sync_api.expect(warning).to_be_visible()
            assert "unlike the training images" in (warning.text_content() or "")
            assert page.locator("#answers .task").count() == 1  # the answer is still shown
            page.screenshot(path=str(tmp_path / "ood.png"), full_page=True)
            shutil.copyfile(tmp_path / "ood.png", OOD_SCREENSHOT_FOR_REVIEW)
            page.set_input_files("#file", str(hat))
            sync_api.expect(page.locator("#answers .top")).to_contain_text("hat", timeout=60_000)
            assert page.locator("#ood-warning").count() == int(bool(flagged.ood))
        finally:
            browser.close()


def test_real_server_refuses_bad_uploads_and_keeps_serving(server: str) -> None:
    """The same limits over a real socket (uvicorn + h11), where a body is really streamed."""
    import httpx

    auth = {"Authorization": f"Bearer {TOKEN}"}
    multi = {**auth, "Content-Type": "multipart/form-data; boundary=abc"}
    big = httpx.post(f"{server}/v1/predict", content=b"x" * 21_000_000, headers=multi, timeout=60)
    assert big.status_code == 413 and "limit" in big.json()["error"]

    def stream() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        yield b'--abc\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
        for _ in range(400):
            yield b"x" * 65536

    chunked = httpx.post(f"{server}/v1/predict", content=stream(), headers=multi, timeout=60)
    assert chunked.status_code == 413
    text = httpx.post(f"{server}/v1/predict", files={"files": ("a.txt", b"hi")}, headers=auth)
    assert text.status_code == 415
    assert httpx.post(f"{server}/v1/predict", files={"files": ("a.jpg", b"hi")}).status_code == 401
    photo = sorted((demo_data_dir() / "test" / "hat").glob("*.jpg"))[0].read_bytes()
    ok = httpx.post(f"{server}/v1/predict", files={"files": ("a.jpg", photo)}, headers=auth)
    assert ok.status_code == 200 and ok.json()["results"][0]["top"][0]["label"] == "hat"


def test_page_shows_one_block_per_task(
    tasks_server: str, two_task: headstart.Model, composites: Path
) -> None:
    """Two tasks: a block each, the multi-label one with its chosen labels (or "(none)"), as
    the model answers; then the overlay of the task picked for it."""
    pytest.importorskip("headstart.explain", reason="headstart.explain not available")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    photo = sorted((composites.parent / "test").glob("*.jpg"))[0]
    (expected,) = two_task.predict([photo], top_k=5)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            page.goto(tasks_server + "/")
            sync_api.expect(page.locator("#subtitle")).to_contain_text("items (4 labels")
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#answers .task[data-task=items] .row", timeout=60_000)
            blocks = page.locator("#answers .task")
            assert blocks.count() == 2
            headings = page.locator("#answers h3").all_text_contents()
            assert headings == ["leftmulti-class", "itemsmulti-label"]  # name, then its kind
            left = page.text_content(".task[data-task=left] .top") or ""
            assert left.startswith(expected.tasks["left"].labels[0])
            items = page.text_content(".task[data-task=items] .top") or ""
            chosen = expected.tasks["items"].labels
            assert all(label in items for label in chosen) and (chosen or items == "(none)")
            shown = page.locator(".task[data-task=items] .row.chosen").count()
            assert shown == len(chosen)
            assert page.locator(".task[data-task=left] .row").count() == 4
            page.wait_for_selector("#overlay:not([hidden])", timeout=120_000)
            assert _overlay_decoded(page)
            assert "task left" in (page.text_content("#caption") or "")
            page.select_option("#explain-task", "items")
            sync_api.expect(page.locator("#caption")).to_contain_text("task items", timeout=60_000)
            assert _overlay_decoded(page)
            assert page.text_content("#status") == ""
            page.screenshot(path=str(TASKS_SCREENSHOT_FOR_REVIEW), full_page=True)
            # thresholds no probability reaches: the multi-label block says "(none)"
            assert two_task.path is not None
            strict = headstart.load(two_task.path, cache=two_task.cache)
            strict.heads["items"].thresholds_ = np.full(len(ITEMS), 1.01)
            serving = _serve(create_app(strict, explain=False))
            try:
                page.goto(next(serving) + "/")
                sync_api.expect(page.locator("#subtitle")).to_contain_text("items (4 labels")
                page.set_input_files("#file", str(photo))
                page.wait_for_selector("#answers .task[data-task=items] .row", timeout=60_000)
                assert page.text_content(".task[data-task=items] .top") == "(none)"
                assert page.locator(".task[data-task=items] .row.chosen").count() == 0
                assert page.locator(".task[data-task=items] .row").count() == 4
            finally:
                next(serving, None)  # stops that server
        finally:
            browser.close()
