"""A text model's requests: ``POST /v1/predict`` with JSON ``{"texts": [...]}`` and
``POST /v1/explain`` with JSON ``{"text": "...", "target"?: ..., "task"?: ...}``.

Limits (:class:`~headstart.serve.uploads.Limits`): at most ``max_texts`` texts and
``max_text_chars`` characters per text (413 naming the text), within the body limit.  A body
that is not JSON is 400; JSON of the wrong shape 422.  Each text is stripped; an empty or
undecodable one gets its own error in the results (422), as an unreadable image does, and only
when every text fails does the request itself fail.  Files sent to a text model, and JSON texts
sent to an image model, are refused with 415 saying what the model takes.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from headstart.data.texts import text_problem
from headstart.errors import HeadstartError
from headstart.explain.text import explain_text
from headstart.serve.service import Service
from headstart.serve.uploads import ApiError, Limits

__all__ = ["explain_text_response", "predict_texts", "read_json", "read_texts", "refuse_json"]

_JSON = "application/json"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def refuse_json(request: Request) -> None:
    """A 415 when texts (JSON) are sent to an image model."""
    if _media_type(request) == _JSON:
        raise ApiError(
            415,
            "this model classifies images: send image files as multipart/form-data (field "
            "'files'); JSON texts are for text models",
        )


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object (415 when it is not JSON, 400 when it does not parse, 422
    when it is not an object)."""
    media = _media_type(request)
    if media != _JSON:
        if media == "multipart/form-data":
            raise ApiError(
                415,
                'this model classifies texts, not files: send JSON {"texts": ["..."]} with '
                "Content-Type application/json",
            )
        raise ApiError(415, f"Content-Type must be {_JSON}, got {media or 'none'}")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(422, f"the body must be a JSON object, got {type(body).__name__}")
    return body


def _check_length(text: str, where: str, limits: Limits) -> None:
    if len(text) > limits.max_text_chars:
        raise ApiError(
            413,
            f"{where} has {len(text):,} characters, over the limit of {limits.max_text_chars:,}",
        )


async def read_texts(request: Request, limits: Limits) -> list[str]:
    """The texts of a predict request, ``{"texts": [...]}`` (or ``{"text": "..."}`` for one),
    checked against ``limits``; not yet stripped or checked for emptiness."""
    body = await read_json(request)
    if "texts" in body:
        texts = body["texts"]
        if not isinstance(texts, list):
            raise ApiError(422, f"'texts' must be a list of strings, got {type(texts).__name__}")
    elif isinstance(body.get("text"), str):
        texts = [body["text"]]
    else:
        raise ApiError(422, 'send {"texts": ["...", ...]}: the body has no \'texts\' list')
    if not texts:
        raise ApiError(422, "'texts' is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise ApiError(413, f"too many texts: {len(texts)}, over the limit of {limits.max_texts}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ApiError(422, f"texts[{i}] must be a string, got {type(text).__name__}")
        _check_length(text, f"texts[{i}]", limits)
    return texts


async def predict_texts(request: Request, svc: Service, top_k: int) -> JSONResponse:
    """Every task's answer for each text, batched with concurrent requests' texts."""
    texts = await read_texts(request, svc.limits)

    async def one(i: int, raw: str) -> dict[str, Any]:
        text = raw.strip()
        problem = text_problem(text)
        if problem is not None:
            failed = {"top": [], "tasks": {}, "error": problem, "status": 422}
            return {"index": i, "text": text, **failed, **svc.ood(None)}
        rows, score = await svc.batcher.predict(text)
        answers = svc.answers(rows, top_k)
        top = answers[svc.tasks[0].name]["top"]
        done = {"top": top, "tasks": answers, "error": None, "status": 200}
        return {"index": i, "text": text, **done, **svc.ood(score)}

    results = await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))
    failed = [r for r in results if r["error"]]
    if len(failed) == len(results):  # nothing usable: the request itself failed
        first = failed[0]
        body = {"error": f"texts[{first['index']}]: {first['error']}", "results": results}
        return JSONResponse(body, status_code=first["status"])
    return JSONResponse({"results": results})


async def explain_text_response(
    request: Request, svc: Service, target: str | None, task: str | None
) -> JSONResponse:
    """Word attributions of one text (``{"text": ...}``; ``target``/``task`` from the body or
    the query) by occlusion, computed in the model thread."""
    body = await read_json(request)
    text = body.get("text")
    if not isinstance(text, str):
        raise ApiError(422, 'send {"text": "..."}: one text to explain')
    _check_length(text, "the text", svc.limits)
    for key, value in (("target", body.get("target", target)), ("task", body.get("task", task))):
        if value is not None and not isinstance(value, str):
            raise ApiError(422, f"'{key}' must be a string, got {type(value).__name__}")
    target, task = body.get("target", target), body.get("task", task)
    run = functools.partial(explain_text, svc.model, text, target, task=task)
    try:
        result = await svc.batcher.run(run)
    except HeadstartError as exc:  # an unknown class or task, an empty text
        raise ApiError(422, " ".join(str(exc).split())) from None
    return JSONResponse(result.to_dict())
