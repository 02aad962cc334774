"""What every request passes before the routes (TestClient): the Host and Origin allow-list
against DNS rebinding and other sites' pages, the security headers on every response, the
OpenAPI schema behind the token, the pixel limit the 413 quotes, and ``headstart serve
--allow-host/--timeout``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

import headstart
import headstart.serve.app as serve_app
from headstart.cli.main import app as cli_app
from headstart.cli.main import main
from headstart.errors import ConfigError
from headstart.result import FitResult
from headstart.serve import Limits, create_app, decode_upload
from headstart.serve.guard import HostAllowList, host_name, serving_hosts
from headstart.serve.uploads import pillow_pixel_limit
from serving import files, photo, png_claiming

TOKEN = "guard-test-token"
#: What TestClient sends as Host unless told otherwise.
TEST_HOST = "testserver"
LOOPBACK_HOSTS = ["localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:9", "[::1]", "[::1]:80"]
EVIL = "evil.example"


@pytest.fixture(scope="module")
def model(plain_run: FitResult) -> headstart.Model:
    """The session's probe on four demo classes."""
    return plain_run.model


@pytest.fixture(scope="module")
def default_app(model: headstart.Model) -> FastAPI:
    """The service as ``headstart serve`` makes it on 127.0.0.1: loopback names only."""
    return create_app(model, limits=Limits(max_pixels=10_000_000))


@pytest.fixture(scope="module")
def client(default_app: FastAPI) -> Iterator[TestClient]:
    """A client of the default service that names a loopback host."""
    with TestClient(default_app, base_url="http://localhost:8000") as c:
        yield c


def _one_line_json_error(response: Any, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert needle in body["error"], body
    assert "\n" not in body["error"]


# ---- Host and Origin --------------------------------------------------------------------------


def test_an_evil_host_is_refused_with_a_json_error(default_app: FastAPI) -> None:
    """DNS rebinding: a page on evil.example, resolved to 127.0.0.1, must not read the model."""
    with TestClient(default_app, base_url=f"http://{EVIL}:8000") as c:
        for response in (
            c.get("/v1/model"),
            c.post("/v1/predict", files=files(("a.jpg", photo()))),
            c.get("/"),
            c.get("/healthz"),
        ):
            _one_line_json_error(response, 400, f"Host '{EVIL}:8000' is not allowed")
            assert "localhost" in response.json()["error"]  # says what is allowed
            assert response.headers["x-content-type-options"] == "nosniff"
    # TestClient's own name is no exception: the other tests allow it on purpose
    with TestClient(default_app) as c:
        _one_line_json_error(c.get("/v1/model"), 400, "'testserver' is not allowed")


def test_the_loopback_names_pass_with_any_port(default_app: FastAPI) -> None:
    with TestClient(default_app) as c:
        for host in [*LOOPBACK_HOSTS, "LOCALHOST", "localhost."]:
            response = c.get("/v1/model", headers={"Host": host})
            assert response.status_code == 200, (host, response.text)
        for host in ["", "localhost.evil.example", "127.0.0.1.evil.example", "[::1", "[::2]"]:
            assert c.get("/v1/model", headers={"Host": host}).status_code == 400, host


def test_cross_origin_requests_are_refused(client: TestClient) -> None:
    for origin in [f"http://{EVIL}", f"https://{EVIL}:8000", "null", "file://", "http://[::1"]:
        response = client.post(
            "/v1/predict", files=files(("a.jpg", photo())), headers={"Origin": origin}
        )
        _one_line_json_error(response, 403, "cross-origin request")
        assert client.get("/v1/model", headers={"Origin": origin}).status_code == 403
    for origin in ["http://localhost:8000", "http://127.0.0.1:3000", "http://[::1]:8000"]:
        response = client.post(
            "/v1/predict", files=files(("a.jpg", photo())), headers={"Origin": origin}
        )
        assert response.status_code == 200, (origin, response.text)


def test_allow_hosts_adds_names_and_a_star_turns_the_check_off(model: headstart.Model) -> None:
    app = create_app(model, allow_hosts=["Box.LAN:8000", "*.example.org", "10.0.0.7", "fe80::1"])
    with TestClient(app) as c:
        for host in ["box.lan", "box.lan:1234", "a.example.org", "10.0.0.7:8000", "[fe80::1]:80"]:
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host
        for host in ["example.org", "lan", EVIL]:
            assert c.get("/healthz", headers={"Host": host}).status_code == 400, host
        allowed = {"Host": "box.lan", "Origin": "http://a.example.org"}
        assert c.get("/v1/model", headers=allowed).status_code == 200
        evil_origin = {"Host": "box.lan", "Origin": f"http://{EVIL}"}
        assert c.get("/v1/model", headers=evil_origin).status_code == 403
    with TestClient(create_app(model, allow_hosts=["*"])) as c:
        anything = {"Host": EVIL, "Origin": f"http://{EVIL}"}
        assert c.get("/v1/model", headers=anything).status_code == 200


@pytest.mark.parametrize("entry", ["http://box.lan", "", "a b", "box.lan/x", "*box.lan", "**"])
def test_a_bad_allowed_host_is_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError, match="not a host name"):
        HostAllowList.of([entry])


def test_host_names_and_serving_hosts() -> None:
    assert host_name("[::1]:8000") == "::1" and host_name("LocalHost.:80") == "localhost"
    assert host_name("::1") == "::1" and host_name("[::1]x") == ""
    assert serving_hosts("0.0.0.0") == [] and serving_hosts("::", ["a"]) == ["a"]
    assert serving_hosts("192.168.1.5", ["box.lan"]) == ["192.168.1.5", "box.lan"]


# ---- security headers -------------------------------------------------------------------------


def _secured(response: Any) -> None:
    assert response.headers["x-content-type-options"] == "nosniff", response.url
    assert response.headers["x-frame-options"] == "DENY", response.url
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1 and "frame-ancestors 'none'" in policies[0], policies


def test_every_response_carries_the_security_headers(
    model: headstart.Model, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = client.get("/")
    _secured(page)
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy  # the page's own
    for response in (
        client.get("/healthz"),
        client.get("/v1/model"),
        client.post("/v1/predict", files=files(("a.jpg", photo()))),
        client.post("/v1/predict", files=files(("a.txt", b"text"))),  # 415
        client.post("/v1/predict", files=files(("a.png", png_claiming(5000, 5000)))),  # 413
        client.post("/v1/predict", content=b"x" * 30_000_000),  # 413 from the body limit
        client.get("/nope"),  # 404
        client.get("/v1/predict"),  # 405
        client.post("/v1/predict?top_k=0", files=files(("a.jpg", photo()))),  # 422
        client.get("/v1/model", headers={"Host": EVIL}),  # 400
        client.get("/v1/model", headers={"Origin": f"http://{EVIL}"}),  # 403
    ):
        _secured(response)
    with TestClient(create_app(model, token=TOKEN), base_url="http://localhost") as c:
        _secured(c.get("/v1/model"))  # 401

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(serve_app, "_task_info", broken)
    app = create_app(model)
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        response = c.get("/v1/model")
    assert response.status_code == 500 and "RuntimeError" in response.json()["error"]
    _secured(response)


# ---- the OpenAPI schema and docs --------------------------------------------------------------


def test_the_schema_needs_the_token_when_there_is_one(model: headstart.Model) -> None:
    with TestClient(create_app(model, token=TOKEN), base_url="http://localhost") as c:
        _one_line_json_error(c.get("/openapi.json"), 401, "bearer token")
        good = c.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200 and "/v1/predict" in good.json()["paths"]
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):  # off: they load from a CDN
            assert c.get(path).status_code == 404, path
    with TestClient(create_app(model), base_url="http://localhost") as c:
        assert "/v1/model" in c.get("/openapi.json").json()["paths"]  # no token: open
        assert c.get("/docs").status_code == 404


# ---- the pixel limit --------------------------------------------------------------------------


def test_every_pixel_limit_message_quotes_the_limit_in_force(client: TestClient) -> None:
    pillow = pillow_pixel_limit()
    assert pillow is not None and pillow > 10_000_000
    for width, height in [(100_000, 100_000), (20_000, 10_000), (4000, 3000)]:
        response = client.post("/v1/predict", files=files(("a.png", png_claiming(width, height))))
        _one_line_json_error(response, 413, "> limit 10,000,000 px")
        assert f"{pillow:,}" not in response.json()["error"]
    limits = Limits(max_pixels=1000)
    with pytest.raises(Exception, match=r"40x30 px > limit 1,000 px"):
        decode_upload(png_claiming(40, 30), limits)


def test_a_pixel_limit_above_pillows_own_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    pillow = pillow_pixel_limit()
    assert pillow is not None
    with pytest.raises(ConfigError, match="Pillow's own limit"):
        Limits(max_pixels=pillow + 1)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's check off: ours only
    assert Limits(max_pixels=pillow + 1).max_pixels == pillow + 1
    with pytest.raises(ConfigError, match="timeout_s"):
        Limits(timeout_s=0)


# ---- CLI --------------------------------------------------------------------------------------


def test_cli_allow_host_and_timeout(
    model: headstart.Model,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append({"app": app, **kw}))
    bundle = str(model.path)
    argv = ["serve", bundle, "--host", "10.1.2.3", "--allow-host", "box.lan", "--timeout", "7"]
    assert main(argv) == 0
    (run,) = runs
    assert run["http"].head_timeout_s == 7 and run["timeout_keep_alive"] == 5
    with TestClient(run["app"]) as c:
        for host in ["10.1.2.3:8000", "box.lan", "localhost:8000"]:  # bound, named, loopback
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host
        assert c.get("/healthz", headers={"Host": EVIL}).status_code == 400
        assert c.get("/v1/model", headers={"Host": "localhost"}).json()["limits"]["timeout_s"] == 7
    assert main(["serve", bundle, "--host", "0.0.0.0"]) == 0
    assert "--allow-host" in capsys.readouterr().out  # a wildcard bind names no host: a hint
    with TestClient(runs[-1]["app"]) as c:
        assert c.get("/healthz", headers={"Host": "0.0.0.0"}).status_code == 400
    assert main(["serve", bundle, "--allow-host", "*"]) == 0
    assert "any Host" in capsys.readouterr().out
    with TestClient(runs[-1]["app"]) as c:
        assert c.get("/healthz", headers={"Host": EVIL, "Origin": f"http://{EVIL}"}).is_success
    for bad, needle in [(["--timeout", "0"], "--timeout"), (["--allow-host", "http://x"], "x")]:
        assert main(["serve", bundle, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_cli_help_documents_the_host_check() -> None:
    serve = typer.main.get_command(cli_app).commands["serve"]  # type: ignore[attr-defined]
    params = {o: p for p in serve.params for o in getattr(p, "opts", [])}
    assert "'*'" in params["--allow-host"].help and params["--timeout"].default == 30.0


def test_the_page_still_works_on_loopback(client: TestClient) -> None:
    """The page's own requests (same origin) pass the Origin check."""
    page = client.get("/", headers={"Host": "127.0.0.1:8000"})
    assert page.status_code == 200 and "/v1/predict" in page.text
    same_origin = {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"}
    response = client.post(
        "/v1/predict", files=files(("a.jpg", photo("shoes"))), headers=same_origin
    )
    assert response.json()["results"][0]["top"][0]["label"] == "shoes"
