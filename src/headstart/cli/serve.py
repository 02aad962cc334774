"""``headstart serve MODEL``: the HTTP API and a page to try the model, with uvicorn.

The optional bearer token comes from ``--token-file`` or the ``HEADSTART_TOKEN`` environment
variable, never from the command line (where ``ps`` and shell history would show it).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from headstart.errors import ConfigError

TOKEN_ENV = "HEADSTART_TOKEN"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def read_token(token_file: Path | None) -> str | None:
    """The token from ``token_file`` (stripped), else from $HEADSTART_TOKEN, else None."""
    if token_file is None:
        value = os.environ.get(TOKEN_ENV)
        if value is not None and not value.strip():
            raise ConfigError(f"${TOKEN_ENV} is set but empty; unset it or give a token")
        return value.strip() if value else None
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"token file not found: {token_file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read token file {token_file}: {exc}") from None
    if not token:
        raise ConfigError(f"token file {token_file} is empty; put the token on its first line")
    if any(c.isspace() for c in token):
        raise ConfigError(f"token file {token_file} holds whitespace inside the token")
    return token


def command(
    model: Path = typer.Argument(..., help="Model bundle folder (RUN/model)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", "-p", help="Port to listen on."),
    token_file: Path | None = typer.Option(
        None, "--token-file", help=f"File holding a bearer token (or set ${TOKEN_ENV})."
    ),
    max_bytes: int = typer.Option(20 * 1024 * 1024, "--max-bytes", help="Largest request body."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels", help="Largest image (pixels)."),
    max_files: int = typer.Option(16, "--max-files", help="Most images in one request."),
    max_batch: int = typer.Option(16, "--max-batch", help="Most images in one model batch."),
    explain: bool = typer.Option(True, "--explain/--no-explain", help="Serve /v1/explain."),
) -> None:
    """Serve the model over HTTP: POST /v1/predict (every task's answer), POST /v1/explain
    (?task=), GET /v1/model, /healthz and a page at / to try it."""
    import uvicorn

    # the library (numpy, torch, fastapi): only when the command runs
    from headstart.model import load
    from headstart.serve import Limits, create_app

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    token = read_token(token_file)
    limits = Limits(
        max_request_bytes=max_bytes, max_pixels=max_pixels, max_files=max_files, max_batch=max_batch
    )
    app = create_app(load(model), token=token, limits=limits, explain=explain)
    shown = f"[{host}]" if ":" in host else host
    print(f"headstart: serving {model} at http://{shown}:{port}/  (Ctrl+C stops)", flush=True)
    if token is None and host not in _LOOPBACK:
        print(f"headstart: warning: listening on {host} without a token", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("serve")(command)
