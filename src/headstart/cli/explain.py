"""``headstart explain MODEL PHOTO... -o OUT``: class activation map overlays as PNG files."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from headstart.cli.options import TASK_HELP
from headstart.cli.render import console, display_path
from headstart.errors import ConfigError

if TYPE_CHECKING:
    from headstart.explain import Explanation


class Method(str, Enum):
    gradcam = "gradcam"
    gradcampp = "gradcam++"
    eigencam = "eigencam"


def _output_names(paths: list[Path], folder: Path) -> list[Path]:
    """``<stem>.cam.png`` in ``folder``; a repeated stem gets ``-2``, ``-3``, ..."""
    used: dict[str, int] = {}
    names = []
    for path in paths:
        n = used.get(path.stem, 0) + 1
        used[path.stem] = n
        names.append(folder / (f"{path.stem}.cam.png" if n == 1 else f"{path.stem}-{n}.cam.png"))
    return names


def _summary(expl: Explanation) -> str:
    text = f"{expl.predicted} {expl.predicted_probability:.3f}"
    if expl.label != expl.predicted:
        text += f"; explained {expl.label} {expl.probability:.3f}"
    return text


def _single(
    model_path: Path,
    photo: Path,
    out: Path | None,
    method: str,
    target: str | None,
    task: str | None,
) -> int:
    from headstart.explain import explain, save_overlay  # the library: when it runs
    from headstart.model import load

    expl = explain(load(model_path), photo, method=method, target=target, task=task)
    written = save_overlay(expl, out if out is not None else Path(f"{photo.stem}.cam.png"))
    console.print(f"{display_path(photo)}: {_summary(expl)} -> {written}")
    return 0


def _many(
    model_path: Path,
    photos: list[Path],
    out: Path | None,
    method: str,
    target: str | None,
    task: str | None,
) -> int:
    from headstart.explain import (  # the library: when it runs
        Explanation,
        explain_many,
        require_explainable,
        save_overlay,
    )
    from headstart.model import load

    folder = out if out is not None else Path()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"-o {folder} is a file; with several photos it must be a folder")
    model = load(model_path)
    require_explainable(model)  # one line, exit 2, before any photo is tried
    results = explain_many(model, photos, method=method, target=target, task=task)
    table = Table()
    for column in ("image", "prediction", "written"):
        table.add_column(column, overflow="fold")
    failed = 0
    for photo, name, result in zip(photos, _output_names(photos, folder), results, strict=True):
        if not isinstance(result, Explanation):
            failed += 1
            table.add_row(display_path(photo), "[red]error[/]", str(result))
            continue
        written = save_overlay(result, name)
        table.add_row(display_path(photo), _summary(result), str(written))
    console.print(table)
    return 1 if failed else 0


def command(
    model: Path = typer.Argument(..., help="Model bundle folder (RUN/model)."),
    photos: list[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="One photo: the PNG to write (default <photo stem>.cam.png here). Several: a "
        "folder for <stem>.cam.png files (default: here).",
    ),
    method: Method = typer.Option(Method.gradcam, "--method", "-m", help="The CAM method."),
    target: str | None = typer.Option(
        None, "--target", "-t", help="Class to explain (default: the predicted class)."
    ),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
) -> int:
    """Explain predictions with Grad-CAM / Grad-CAM++ / EigenCAM overlays saved as PNG.

    Prints the predicted class, its probability and the file written for each photo.  With
    several photos an unreadable one gets an error row and the exit status is 1.
    """
    from headstart.inputs import expand_inputs

    if len(photos) == 1 and Path(photos[0]).is_file():
        return _single(model, Path(photos[0]), output, method.value, target, task)
    return _many(model, expand_inputs(photos), output, method.value, target, task)


def register(app: typer.Typer) -> None:
    """Add ``headstart explain`` to the app."""
    app.command("explain")(command)
