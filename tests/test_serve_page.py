"""The page at ``/`` in a real browser: a person chooses a photo and sees the prediction, the
probability bars and the Grad-CAM overlay (headless Chromium driven by Playwright, real uvicorn
on a free loopback port)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

import headstart
from browser import CHROMIUM, CHROMIUM_ARGS
from headstart.demo import demo_data_dir
from headstart.serve import create_app

SCREENSHOT_FOR_REVIEW = Path("/tmp/serve_page.png")
TOKEN = "page-test-token"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[headstart.Model]:
    """The same two-class model as test_serve.py (same cache folder: no backbone work twice)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HEADSTART_CACHE", str(tmp_path_factory.getbasetemp() / "serve-cache"))
    data = tmp_path_factory.mktemp("page-data")
    for cls in ("hat", "shoes"):  # 12 photos a class: plenty for hat vs shoes, and quick to fit
        (data / cls).mkdir()
        for src in sorted((demo_data_dir() / "train" / cls).glob("*.jpg"))[:12]:
            shutil.copy(src, data / cls / src.name)
    result = headstart.fit(data, tmp_path_factory.mktemp("page-run") / "run", progress=False)
    yield headstart.load(result.run_dir / "model")
    mp.undo()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(model: headstart.Model) -> Iterator[str]:
    """A real uvicorn server in a thread, with a token (the page must ask for it)."""
    port = _free_port()
    app = create_app(model, token=TOKEN)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


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
            sync_api.expect(page.locator("#subtitle")).to_contain_text("hat, shoes")
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#bars .row", timeout=60_000)
            assert (page.text_content("#top") or "").startswith("shoes")
            assert page.locator("#bars .row").count() == 2
            page.wait_for_selector("#overlay:not([hidden])", timeout=120_000)
            overlay = page.locator("#overlay")
            deadline = time.monotonic() + 10
            while not overlay.evaluate("o => o.complete && o.naturalWidth") and (
                time.monotonic() < deadline
            ):
                time.sleep(0.1)
            assert overlay.evaluate("o => o.naturalWidth") > 0  # the PNG decoded in the page
            assert "shoes" in (page.text_content("#caption") or "")
            assert page.text_content("#status") == ""  # no error shown
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            shutil.copyfile(shot, SCREENSHOT_FOR_REVIEW)
            assert failed == []  # everything the page loaded came from this server
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
