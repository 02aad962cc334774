"""The web service: ``create_app(model)`` gives a FastAPI app with predict, explain, model info,
health and a page to try it (``headstart serve MODEL`` runs it with uvicorn); a text model takes
JSON texts (:mod:`headstart.serve.texts`)."""

from __future__ import annotations

from headstart.serve.app import ALLOWED_FORMATS, ApiError, Limits, create_app, decode_upload
from headstart.serve.batching import Batcher, BatchStats

__all__ = [
    "ALLOWED_FORMATS",
    "ApiError",
    "BatchStats",
    "Batcher",
    "Limits",
    "create_app",
    "decode_upload",
]
