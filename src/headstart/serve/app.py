"""The HTTP service: predict, model info, health, Grad-CAM explanations and a page to try it.
A text model takes JSON texts instead of image files, and explains by word attributions (see
:mod:`headstart.serve.texts`); ``GET /v1/model`` says which (``modality``).

Every model is served, whatever its tasks: each answer holds every task's chosen labels and
top-k (``tasks``), and ``top`` (the first task's top-k, the whole answer of a plain model), and
``ood_score``/``ood``: how unlike the training images the upload is and whether that is above
the model's threshold (null for models without an OOD scorer).

Every error is JSON ``{"error": "..."}`` with 400, 401, 403, 404, 408, 413, 415 or 422; bad
input never reaches the model and never costs a 500.  Request bodies are capped while they stream
in (the ``Content-Length`` is checked first), so an oversized upload is refused without being held
in memory, and must keep arriving (408 when stalled; see :mod:`headstart.serve.guard`).  Images
are sniffed by their magic bytes against the allowed formats, then decoded with
:func:`headstart.data.load_rgb` under a pixel limit.  Requests naming a host that is not allowed
(DNS rebinding, other sites' pages) are refused, and every response carries ``nosniff`` and
no-framing headers.  A client that hangs up mid-upload costs one quiet log line, no traceback.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from headstart.data import Task
from headstart.errors import ConfigError, HeadstartError
from headstart.explain import explain as explain_image
from headstart.explain import overlay_png, require_explainable
from headstart.model import Model
from headstart.serve.batching import Batcher
from headstart.serve.guard import (
    HostAllowList,
    HostGuard,
    ReadTimeout,
    SecurityHeaders,
    security_headers,
)
from headstart.serve.page import CSP, render_page
from headstart.serve.service import Scored, Service, scored_rows
from headstart.serve.texts import explain_text_response, predict_texts, refuse_json
from headstart.serve.uploads import (
    ALLOWED_FORMATS,
    ApiError,
    BodyLimit,
    Limits,
    decode_upload,
    json_error,
    sniff_format,
    uploads,
)

__all__ = ["ALLOWED_FORMATS", "ApiError", "Limits", "create_app", "decode_upload", "sniff_format"]

_log = logging.getLogger("headstart.serve")


def _title(model: Model) -> str:
    tasks = model.tasks
    if len(tasks) > 1:
        what = f"tasks: {', '.join(t.name for t in tasks)}"
    elif tasks[0].multi_label:
        what = f"{len(tasks[0].classes)} labels, multi-label"
    else:
        what = f"{len(tasks[0].classes)} classes"
    if model.modality == "text":
        what = f"texts, {what}"
    return f"headstart: {model.backbone_name} ({what})"


def _task_info(task: Task, thresholds: np.ndarray | None) -> dict[str, Any]:
    info: dict[str, Any] = task.to_dict()
    if thresholds is not None:
        info["thresholds"] = [round(float(t), 6) for t in thresholds]
    return info


def _lifespan(model: Model, batcher: Batcher[Scored]) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load the backbone engine once, before the first request has to wait for it.
        if model.modality == "text":
            await batcher.run(model.score_texts, ["warm up"])
        else:
            grey = Image.new("RGB", (64, 64), (128, 128, 128))
            await batcher.run(model.predict_images, [grey])
        yield
        await batcher.close()

    return lifespan


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return json_error(exc.status, exc.message, exc.headers)

    async def gone(request: Request, exc: Exception) -> Response:
        # The client hung up mid-request: nobody reads an answer, and it is no server error.
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        _log.info("%s went away before its request was read (%s)", client, request.url.path)
        return Response(status_code=499)  # nginx's "client closed request"; never sent

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return json_error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()]
        return json_error(422, "; ".join(parts) or "invalid request")

    async def bug(request: Request, exc: Exception) -> JSONResponse:
        # Bad input never gets here; this is a bug in headstart, answered as JSON all the same.
        # (Answered outside the middleware, so the security headers are added here.)
        message = f"internal error ({type(exc).__name__}); see the server log"
        return json_error(500, message, security_headers())

    app.add_exception_handler(Exception, bug)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ClientDisconnect, gone)


def _auth(token: str | None) -> Callable[[Request], None]:
    expected = token.encode() if token else None

    def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest takes the same time wherever the first differing byte is
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)
        if not ok:
            raise StarletteHTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    return check


def create_app(
    model: Model,
    *,
    token: str | None = None,
    limits: Limits = Limits(),
    explain: bool = True,
    allow_hosts: Iterable[str] = (),
) -> FastAPI:
    """The web service for ``model``: ``POST /v1/predict``, ``POST /v1/explain``,
    ``GET /v1/model``, ``GET /healthz``, ``GET /openapi.json`` and the page at ``/``.  With
    ``token``, the ``/v1`` endpoints and the OpenAPI schema need ``Authorization: Bearer
    <token>``.

    Requests must name a loopback host (``localhost``, ``127.0.0.1``, ``[::1]``, any port) or one
    of ``allow_hosts`` (names, ``*.domain``; ``"*"`` turns the check off) in ``Host``, and in
    ``Origin`` when they carry one; see :class:`~headstart.serve.guard.HostGuard`."""
    if token is not None and not token.strip():
        raise ConfigError("the token is empty; give a non-empty token or none")
    allowed = HostAllowList.of(allow_hosts)
    batcher = Batcher(
        scored_rows(model),
        max_batch=limits.max_batch,
        max_wait_s=limits.max_wait_ms / 1000,
    )
    app = FastAPI(
        title=_title(model),
        lifespan=_lifespan(model, batcher),
        docs_url=None,  # the Swagger page loads from a CDN; this service works offline
        redoc_url=None,
        openapi_url=None,  # served below, behind the token like the API
    )
    app.state.batcher = batcher
    # The last added runs first: headers on every answer, then the host check, then the body.
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    app.add_middleware(ReadTimeout, timeout_s=limits.timeout_s)
    app.add_middleware(HostGuard, allow=allowed)
    app.add_middleware(SecurityHeaders)
    _install_error_handlers(app)
    # JPEGs decode at reduced scale down to the model's resize: the rule fitting and
    # `headstart predict` use, so the service gives the same probabilities.  A fused backbone
    # decodes once for all its parts, at the largest part's size (never below any part's own;
    # exactly predict's when the parts share a resize, as the built-ins at 224 px do).
    resize = max(part.preprocessing.resize for part in model.backbone_ref.members)
    # Grad-CAM needs one network: a fused model's page shows no explain button
    explain = explain and not model.backbone_ref.is_fused
    svc = Service(
        model=model,
        limits=limits,
        batcher=batcher,
        decode=functools.partial(decode_upload, limits=limits, draft_size=resize),
        auth=[Depends(_auth(token.strip() if token else None))],
        explain=explain,
        thresholds={t.name: model.thresholds(t) for t in model.tasks},
    )
    page = render_page(
        title=app.title,
        auth=token is not None,
        explain=explain,
        modality=model.modality,
        max_text_chars=limits.max_text_chars,
    )
    _info_routes(app, svc, page)
    _predict_route(app, svc)
    _explain_route(app, svc)
    return app


def _info_routes(app: FastAPI, svc: Service, page: str) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP})

    @app.get("/openapi.json", include_in_schema=False, dependencies=svc.auth)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "classes": len(svc.classes), "tasks": len(svc.tasks)}

    @app.get("/v1/model", dependencies=svc.auth)
    async def model_info() -> dict[str, Any]:
        info = svc.model.info
        return {
            "modality": svc.model.modality,
            "classes": svc.classes,
            "tasks": [_task_info(t, svc.thresholds[t.name]) for t in svc.tasks],
            "backbone": info.get("backbone", {"name": svc.model.backbone_name}),
            "head": {k: info.get("head", {}).get(k) for k in ("kind", "params")},
            "metrics": info.get("metrics", {}),
            "limits": svc.limits.to_dict(),
            "explain": svc.explain,
            "ood": _ood_info(svc.model),
        }


def _predict_route(app: FastAPI, svc: Service) -> None:
    @app.post("/v1/predict", dependencies=svc.auth)
    async def predict(request: Request, top_k: int = Query(3, ge=1)) -> JSONResponse:
        if svc.texts:  # JSON {"texts": [...]}; see headstart.serve.texts
            return await predict_texts(request, svc, top_k)
        refuse_json(request)
        files = await uploads(request, svc.limits, ("files", "file"))

        async def one(upload: UploadFile) -> dict[str, Any]:
            name = upload.filename or ""
            try:
                image = await asyncio.to_thread(svc.decode, await upload.read())
            except ApiError as exc:
                failed = {"top": [], "tasks": {}, "error": exc.message, "status": exc.status}
                return {"filename": name, **failed, **svc.ood(None)}
            rows, score = await svc.batcher.predict(image)
            answers = svc.answers(rows, top_k)
            top = answers[svc.tasks[0].name]["top"]
            done = {"top": top, "tasks": answers, "error": None, "status": 200}
            return {"filename": name, **done, **svc.ood(score)}

        results = await asyncio.gather(*(one(f) for f in files))
        failed = [r for r in results if r["error"]]
        if len(failed) == len(results):  # nothing usable: the request itself failed
            first = failed[0]
            body = {"error": f"{first['filename'] or 'file'}: {first['error']}", "results": results}
            return JSONResponse(body, status_code=first["status"])
        return JSONResponse({"results": results})


def _ood_info(model: Model) -> dict[str, Any] | None:
    """The OOD scorer as ``/v1/model`` describes it (None without one)."""
    if model.ood is None:
        return None
    meta = model.ood.meta()
    return {k: meta[k] for k in ("method", "k", "threshold", "pass_rate", "fitted_on", "score")}


def _explain_route(app: FastAPI, svc: Service) -> None:
    @app.post("/v1/explain", dependencies=svc.auth)
    async def explain_one(
        request: Request,
        method: str = Query("gradcam"),
        target: str | None = Query(None),
        task: str | None = Query(None),
        fmt: str = Query("png", alias="format", pattern="^(png|json)$"),
    ) -> Response:
        if not svc.explain:
            try:  # occlusion explains any text model; Grad-CAM not every image model
                if not svc.texts:
                    require_explainable(svc.model)
            except HeadstartError as exc:  # a fused backbone: say why, as any explain error
                raise ApiError(422, str(exc)) from None
            raise ApiError(404, "explanations are turned off on this server")
        if svc.texts:  # word attributions by occlusion, as JSON
            return await explain_text_response(request, svc, target, task)
        refuse_json(request)
        chosen = _explained_task(svc, task, target)
        files = await uploads(request, svc.limits, ("file", "files"))
        if len(files) != 1:
            raise ApiError(422, f"send exactly one file to explain, got {len(files)}")
        image = await asyncio.to_thread(svc.decode, await files[0].read())
        run = functools.partial(
            explain_image, svc.model, image, method=method, target=target, task=chosen.name
        )
        try:
            result = await svc.batcher.run(run)
        except HeadstartError as exc:
            raise ApiError(422, " ".join(str(exc).split())) from None
        except ImportError as exc:  # grad-cam or torch missing from this installation
            raise ApiError(501, f"explanations are not available here: {exc}") from None
        png = overlay_png(result)
        label, probability = str(result.label), round(float(result.probability), 6)
        if fmt == "json":
            encoded = base64.b64encode(png).decode("ascii")
            body = {"label": label, "probability": probability, "method": method}
            return JSONResponse({**body, "task": chosen.name, "overlay_png_base64": encoded})
        headers = {
            "X-Headstart-Label": quote(label),
            "X-Headstart-Probability": str(probability),
            "X-Headstart-Task": quote(chosen.name),
        }
        return Response(png, media_type="image/png", headers=headers)


def _explained_task(svc: Service, task: str | None, target: str | None) -> Task:
    """The task ``task=`` names (default: the first) after checking it and ``target=`` (422)."""
    try:
        chosen = svc.model.task(task)
    except ConfigError as exc:
        raise ApiError(422, str(exc)) from None
    if target is not None and target not in chosen.classes:
        known = ", ".join(chosen.classes)
        where = f" of task '{chosen.name}'" if len(svc.tasks) > 1 else ""
        raise ApiError(422, f"unknown target class '{target}'{where}; known: {known}")
    return chosen
