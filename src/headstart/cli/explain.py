"""``headstart explain MODEL PHOTO... -o OUT``: class activation map overlays as PNG files; for a
text model, ``headstart explain MODEL "some text" [-o why.html]``: word attributions by
occlusion, the words coloured in the terminal and, with ``-o``, in a small HTML page."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from headstart.cli.options import TASK_HELP
from headstart.cli.render import console, display_path
from headstart.errors import ConfigError

if TYPE_CHECKING:
    from headstart.explain import Explanation
    from headstart.explain.text import TextExplanation
    from headstart.model import Model


class Method(str, Enum):
    gradcam = "gradcam"
    gradcampp = "gradcam++"
    eigencam = "eigencam"
    occlusion = "occlusion"


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
    model: Model,
    photo: Path,
    out: Path | None,
    method: str,
    target: str | None,
    task: str | None,
) -> int:
    from headstart.explain import explain, save_overlay  # the library: when it runs

    expl = explain(model, photo, method=method, target=target, task=task)
    written = save_overlay(expl, out if out is not None else Path(f"{photo.stem}.cam.png"))
    console.print(f"{display_path(photo)}: {_summary(expl)} -> {written}")
    return 0


def _many(
    model: Model,
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

    folder = out if out is not None else Path()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"-o {folder} is a file; with several photos it must be a folder")
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


def _shade(score: float, scale: float) -> str:
    """A rich style for a word's score: green for, red against the target, deeper the larger
    (white when not scored)."""
    if score != score or scale <= 0:  # NaN: after the words scored
        return ""
    weight = min(1.0, abs(score) / scale) * 0.8
    base = (19, 145, 95) if score > 0 else (209, 52, 52)
    r, g, b = (round(255 + (c - 255) * weight) for c in base)
    return f"black on rgb({r},{g},{b})"


def _coloured(expl: TextExplanation) -> Text:
    """The text with each word's background by its attribution (no markup is parsed)."""
    scores = [float(s) for s in expl.scores if s == s]
    scale = max((abs(s) for s in scores), default=0.0)
    out, at = Text(), 0
    for (start, end), score in zip(expl.spans, expl.scores, strict=True):
        out.append(expl.text[at:start])
        out.append(expl.text[start:end], style=_shade(float(score), scale))
        at = end
    out.append(expl.text[at:])
    return out


def _text_summary(expl: TextExplanation) -> str:
    text = f"{expl.target} {expl.probability:.3f}"
    if expl.predicted != expl.target:
        text += f" (predicted {expl.predicted} {expl.predicted_probability:.3f})"
    words = ", ".join(f"{w} {s:+.3g}" for w, s in expl.top_words(3))
    return f"{text}; words for it: {words or '(none)'}"


def _texts(
    model: Model, items: list[str], out: Path | None, target: str | None, task: str | None
) -> int:
    from headstart.explain.text import explain_text, save_html  # the library: when it runs
    from headstart.inputs import expand_texts

    if out is not None and out.is_dir():
        raise ConfigError(f"-o {out} is a folder; for a text model give the .html file to write")
    model.task(task)  # an unknown task fails before any text is scored
    explanations, failed = [], 0
    for source, text, problem in expand_texts(items, model.text_column):
        if problem is not None:
            failed += 1
            console.print(Text.assemble(("error", "red"), f" {source}: {problem}"))
            continue
        expl = explain_text(model, text, target, task=task)
        explanations.append(expl)
        console.print(Text(_text_summary(expl), style="bold"), soft_wrap=True)
        console.print(_coloured(expl), soft_wrap=True)
    if out is not None and explanations:
        console.print(f"wrote {save_html(explanations, out)}", markup=False)
    return 1 if failed else 0


def command(
    model: Path = typer.Argument(..., help="Model bundle folder (RUN/model)."),
    photos: list[str] = typer.Argument(
        ...,
        help="Image files, folders or glob patterns; for a text model: texts, .txt files or "
        "CSV files (the model's text column).",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="One photo: the PNG to write (default <photo stem>.cam.png here). Several: a "
        "folder for <stem>.cam.png files (default: here). A text model: an HTML file showing "
        "every text's words highlighted.",
    ),
    method: Method | None = typer.Option(
        None,
        "--method",
        "-m",
        help="gradcam (the default for images), gradcam++, eigencam; occlusion (text models, "
        "their only method).",
    ),
    target: str | None = typer.Option(
        None, "--target", "-t", help="Class to explain (default: the predicted class)."
    ),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
) -> int:
    """Explain predictions with Grad-CAM / Grad-CAM++ / EigenCAM overlays saved as PNG; a text
    model's by word attributions (occlusion: each word removed in turn, the drop of the
    class's probability), coloured in the terminal and written as HTML with -o.

    Prints the predicted class, its probability and the file written for each photo.  With
    several photos an unreadable one gets an error row and the exit status is 1.
    """
    from headstart.inputs import expand_inputs  # the library: when it runs
    from headstart.model import load

    loaded = load(model)
    if loaded.modality == "text":
        if method not in (None, Method.occlusion):
            raise ConfigError(
                f"--method {method.value} explains images; a text model is explained by "
                "occlusion (leave --method out)"
            )
        return _texts(loaded, photos, output, target, task)
    if method is Method.occlusion:
        raise ConfigError("--method occlusion explains text models; for images use gradcam")
    cam = (method or Method.gradcam).value
    if len(photos) == 1 and Path(photos[0]).is_file():
        return _single(loaded, Path(photos[0]), output, cam, target, task)
    return _many(loaded, expand_inputs(photos), output, cam, target, task)


def register(app: typer.Typer) -> None:
    """Add ``headstart explain`` to the app."""
    app.command("explain")(command)
