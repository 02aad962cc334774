"""Entry point: builds the Typer app and turns user errors into one line on stderr, exit 2."""

from __future__ import annotations

import inspect
import sys
from types import ModuleType

import click
import typer

from headstart.cli import (
    backbones,
    calibrate,
    compare,
    compare_strategies,
    compress,
    cv,
    demo,
    distill,
    embed,
    ensemble,
    evaluate,
    explain,
    explore,
    export,
    fit,
    lr_find,
    predict,
    pretrain,
    rank_backbones,
    report,
    serve,
    tune,
)
from headstart.errors import HeadstartError

__all__ = ["app", "main", "run"]

app = typer.Typer(
    name="headstart",
    help="Transfer learning on images: pretrained backbone → cached embeddings → head → bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_COMMANDS: tuple[ModuleType, ...] = (fit, predict, evaluate, backbones, demo, report, explain)
_COMMANDS += (serve, export, cv, tune, rank_backbones, calibrate, compare)
_COMMANDS += (lr_find, compare_strategies, explore, ensemble, compress, distill, pretrain)
_COMMANDS += (embed,)
for module in _COMMANDS:
    module.register(app)
for _info in app.registered_commands:
    # the command list shows each docstring's first paragraph; as one line, so that rich
    # wraps it to the terminal instead of keeping the source's line breaks
    _doc = _info.help or (_info.callback.__doc__ if _info.callback else None) or ""
    _info.short_help = _info.short_help or " ".join(inspect.cleandoc(_doc).split("\n\n")[0].split())


def disk_fault(exc: OSError) -> str:
    """One line naming the path and the cause of an operating-system error."""
    cause = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return cause if exc.filename is None else f"{exc.filename}: {cause}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` and return the exit status (2 for a user error)."""
    try:
        result = app(args=argv, prog_name="headstart", standalone_mode=False)
    except HeadstartError as exc:
        message = " ".join(str(exc).split())
        print(f"headstart: error: {message}", file=sys.stderr)
        return 2
    # typer >= 0.2x raises its own (vendored) click exceptions; older releases raise click's
    except (typer.Exit, click.exceptions.Exit) as exc:
        return int(getattr(exc, "exit_code", 0))
    except (typer.Abort, click.exceptions.Abort):
        print("headstart: aborted", file=sys.stderr)
        return 1
    except (typer.TyperException, click.ClickException) as exc:
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"headstart: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print("headstart: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk or the OS said no: full, read-only, permissions
        print(f"headstart: error: {disk_fault(exc)}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
