"""``headstart serve MODEL``: the HTTP API and a page to try the model, with uvicorn.

The optional bearer token comes from ``--token-file`` or the ``HEADSTART_TOKEN`` environment
variable, never from the command line (where ``ps`` and shell history would show it).

Requests must name an allowed host (loopback names, the ``--host`` address, ``--allow-host``
names): a web page elsewhere cannot reach the server by DNS rebinding or cross-origin requests.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from headstart.errors import ConfigError

TOKEN_ENV = "HEADSTART_TOKEN"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_WILDCARDS = ("0.0.0.0", "::", "")
ALLOW_HOST_HELP = (
    "Also accept requests whose Host (or browser Origin) names this host; repeatable; "
    "*.example.com for its subdomains. Loopback names (localhost, 127.0.0.1, [::1]) and the "
    "--host address are always accepted. '*' turns the check off (only behind a proxy that "
    "checks Host itself): any web page could then reach this server."
)


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
    max_batch: int = typer.Option(
        16, "--max-batch", help="Most images (texts) in one model batch."
    ),
    max_texts: int = typer.Option(64, "--max-texts", help="A text model: most texts a request."),
    max_text_chars: int = typer.Option(
        10_000, "--max-text-chars", help="A text model: the longest text (characters)."
    ),
    explain: bool = typer.Option(True, "--explain/--no-explain", help="Serve /v1/explain."),
    allow_host: list[str] | None = typer.Option(
        None, "--allow-host", metavar="NAME", help=ALLOW_HOST_HELP
    ),
    timeout: float = typer.Option(
        30.0,
        "--timeout",
        metavar="SECONDS",
        help="How long to wait for a request's headers or the next part of its body "
        "(a whole body: ten times as long); a stalled request is cut off (408).",
    ),
) -> None:
    """Serve the model over HTTP: POST /v1/predict (every task's answer), POST /v1/explain
    (?task=), GET /v1/model, /healthz and a page at / to try it.  A text model takes JSON
    {"texts": [...]} and explains by word attributions."""
    import uvicorn

    # the library (numpy, torch, fastapi): only when the command runs
    from headstart.model import load
    from headstart.serve import Limits, create_app
    from headstart.serve.guard import serving_hosts
    from headstart.serve.server import uvicorn_options

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    token = read_token(token_file)
    if not timeout > 0:
        raise ConfigError(f"--timeout must be more than 0 seconds, got {timeout:g}")
    limits = Limits(
        max_request_bytes=max_bytes,
        max_pixels=max_pixels,
        max_files=max_files,
        max_batch=max_batch,
        timeout_s=timeout,
        max_texts=max_texts,
        max_text_chars=max_text_chars,
    )
    extra = list(allow_host or [])
    allowed = serving_hosts(host, extra)
    app = create_app(load(model), token=token, limits=limits, explain=explain, allow_hosts=allowed)
    shown = f"[{host}]" if ":" in host else host
    print(f"headstart: serving {model} at http://{shown}:{port}/  (Ctrl+C stops)", flush=True)
    if token is None and host not in _LOOPBACK:
        print(f"headstart: warning: listening on {host} without a token", flush=True)
    if "*" in extra:
        print("headstart: warning: --allow-host '*': any Host and Origin are accepted", flush=True)
    elif host in _WILDCARDS and not extra:
        print(
            "headstart: note: only requests for localhost, 127.0.0.1 or [::1] are answered; "
            "add --allow-host NAME for each name or address clients use",
            flush=True,
        )
    uvicorn.run(app, host=host, port=port, log_level="warning", **uvicorn_options(timeout))


def register(app: typer.Typer) -> None:
    app.command("serve")(command)
