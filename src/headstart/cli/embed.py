"""``headstart embed DATA [--engine local|ray]``: fill the embedding cache ``fit`` reads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from headstart.cli.options import (
    ADDRESS_HELP,
    ENGINE_HELP,
    LABEL_COLUMN_HELP,
    TEXT_COLUMN_HELP,
    build_config,
)
from headstart.cli.render import console

if TYPE_CHECKING:
    from headstart.features import Extraction


def show_embedded(ex: Extraction, name: str, noun: str, engine: str, wall: float) -> None:
    """One line: how many were embedded, found in the cache and failed, the rate, the wall."""
    rate = ex.n_computed / ex.seconds if ex.seconds > 0 and ex.n_computed else 0.0
    console.print(
        f"{name} on {engine}: {ex.n_computed} {noun} embedded, "
        f"{ex.n_cached} cached already, {len(ex.failures)} failed; "
        f"{rate:.1f} {noun}/s, wall {wall:.1f} s",
        soft_wrap=True,
    )


def command(
    data: Path = typer.Argument(
        ..., help="Image folder (class sub-folders) or a CSV (path,label), as fit reads it."
    ),
    engine: str | None = typer.Option(None, "--engine", help=ENGINE_HELP),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    backbone: str | None = typer.Option(
        None, "-b", "--backbone", help="Backbone name (see `headstart backbones`)."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Local weights file for the backbone."
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Cache root (default: $HEADSTART_CACHE or the user cache)."
    ),
    text_column: str | None = typer.Option(None, "--text-column", help=TEXT_COLUMN_HELP),
    label_column: list[str] = typer.Option([], "--label-column", help=LABEL_COLUMN_HELP),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value."),
    unlabelled: bool = typer.Option(
        False,
        "--unlabelled",
        help="DATA is images without labels: a folder (any layout) or a CSV with a path column.",
    ),
    like: Path | None = typer.Option(
        None, "--like", help="Then list the images of DATA nearest this image (cosine)."
    ),
    k: int = typer.Option(5, "-k", min=1, help="How many images --like lists."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Embed every image of DATA into the embedding cache (the one fit reads), here or on a
    Ray cluster; print what was embedded, cached already and failed, and the rate."""
    start = time.perf_counter()
    cfg = build_config(
        config,
        set_,
        backbone=backbone,
        weights=weights,
        text_column=text_column,
        label_column=label_column,
        engine=engine,
        address=address,
    )
    if cache_dir is not None:  # a path, not YAML to parse
        extract = cfg.extract.model_copy(update={"cache_dir": cache_dir})
        cfg = cfg.model_copy(update={"extract": extract})
    from headstart.embedding import (  # the library: when it runs
        embed_data,
        embed_unlabelled,
        nearest_images,
    )
    from headstart.errors import DataError, PathNotFoundError

    if like is not None and not like.is_file():  # before the long part
        raise PathNotFoundError(f"--like: no such image: '{like}'")
    if unlabelled:
        found = embed_unlabelled(data, cfg, progress=not quiet, unique=False)
        assert found.extraction is not None
        extraction, name, noun = found.extraction, cfg.backbone.name, "images"
        paths, shas = found.paths, found.shas
    else:
        try:
            embedded = embed_data(data, cfg, progress=not quiet)
        except DataError as exc:
            if "no class sub-folders" not in str(exc):
                raise
            raise DataError(f"{exc}; for images without labels add --unlabelled") from None
        extraction, name = embedded.extraction, embedded.backbone.name
        noun = embedded.manifest.noun
        paths = [s.path for s in embedded.manifest.samples]
        shas = [s.sha256 for s in embedded.manifest.samples]
    show_embedded(extraction, name, noun, cfg.extract.executor, time.perf_counter() - start)
    if like is not None:
        for path, distance in nearest_images(like, paths, shas, cfg, k=k):
            console.print(f"{distance:.4f}  {path}", soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``embed`` to the app."""
    app.command("embed")(command)
