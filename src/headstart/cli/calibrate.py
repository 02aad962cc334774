"""`headstart calibrate` (being written)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the subcommand to the app (not yet: this module is being written)."""
    del app
