"""``headstart predict MODEL IMAGES...``: every task's answer per image as a table, CSV or JSON,
with each image's OOD score and whether it is unlike the training images (models that have an
OOD scorer: ``ood_score``/``ood`` columns and keys; JSON says null for models without one)."""

from __future__ import annotations

import csv
import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from headstart.cli.options import TTA_HELP
from headstart.cli.render import console, display_path, err_console

if TYPE_CHECKING:
    from headstart.data import Task
    from headstart.export import OnnxClassifier
    from headstart.model import Model, Prediction


class Runtime(str, Enum):
    torch = "torch"
    onnx = "onnx"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _one_task(tasks: list[Task]) -> bool:
    return len(tasks) == 1 and not tasks[0].multi_label


#: What the table and the service's page say of an image flagged as out of distribution.
UNLIKE = "unlike the training images"


def _ood_cells(p: Prediction) -> list[str]:
    """``ood_score`` and ``ood`` CSV cells (empty for an unreadable file)."""
    if p.ood_score is None:
        return ["", ""]
    return [f"{p.ood_score:.6f}", "true" if p.ood else "false"]


def write_csv(predictions: list[Prediction], tasks: list[Task], k: int, ood: bool = False) -> None:
    """CSV on stdout.  One multi-class task: ``label_i, probability_i`` for the top k; else per
    task its chosen labels (joined with ``|``) and its ``label=score`` top list; with ``ood``
    (the model has a scorer) ``ood_score`` and ``ood`` (true/false) before ``error``."""
    writer = csv.writer(sys.stdout)
    extra = ["ood_score", "ood"] if ood else []
    texts = any(p.text is not None for p in predictions)
    lead = ["path", "text"] if texts else ["path"]

    def first(p: Prediction) -> list[str]:
        return [str(p.path), p.text or ""] if texts else [str(p.path)]

    if _one_task(tasks):
        ranks = [f"{name}_{i}" for i in range(1, k + 1) for name in ("label", "probability")]
        writer.writerow([*lead, *ranks, *extra, "error"])
        for p in predictions:
            cells: list[str] = []
            for i in range(k):
                label, prob = p.top[i] if i < len(p.top) else ("", None)
                cells += [label, "" if prob is None else f"{prob:.6f}"]
            scored = _ood_cells(p) if ood else []
            writer.writerow([*first(p), *cells, *scored, p.error or ""])
        return
    names = [t.name for t in tasks]
    header = [f"{t}{suffix}" for t in names for suffix in ("", ":top")]
    writer.writerow([*lead, *header, *extra, "error"])
    for p in predictions:
        cells = []
        for t in names:
            answer = p.tasks.get(t)
            if answer is None:
                cells += ["", ""]
                continue
            cells += ["|".join(answer.labels), " ".join(f"{c}={q:.6f}" for c, q in answer.top)]
        scored = _ood_cells(p) if ood else []
        writer.writerow([*first(p), *cells, *scored, p.error or ""])


def _subject(p: Prediction) -> str:
    """What the table's first column shows: the text (shortened) of a text model's answer,
    else the image's path."""
    if p.text is None:
        return display_path(p.path)
    return p.text if len(p.text) <= 80 else p.text[:79] + "…"


def _ood_text(p: Prediction) -> str:
    if p.ood_score is None:
        return ""
    if p.ood:
        return f"[bold yellow]{p.ood_score:.3f} {UNLIKE}[/]"
    return f"{p.ood_score:.3f}"


def show_table(predictions: list[Prediction], tasks: list[Task], ood: bool = False) -> None:
    """A table: one multi-class task shows the prediction, its probability and the runners-up;
    otherwise a column per task with its chosen labels and their scores; with ``ood`` (the
    model has a scorer) an ``ood score`` column that marks images unlike the training ones."""
    table = Table()
    texts = any(p.text is not None for p in predictions)
    table.add_column("text" if texts else "image", overflow="fold")
    if _one_task(tasks):
        table.add_column("prediction")
        table.add_column("p", justify="right")
        table.add_column("next", overflow="fold")
    else:
        for t in tasks:
            table.add_column(t.name, overflow="fold")
    if ood:
        table.add_column("ood score", overflow="fold")
    flagged = sum(bool(p.ood) for p in predictions)
    for p in predictions:
        if p.error:
            blanks = [""] * ((2 if _one_task(tasks) else len(tasks) - 1) + int(ood))
            table.add_row(_subject(p), f"[red]error[/] {p.error}", *blanks)
            continue
        scored = [_ood_text(p)] if ood else []
        if _one_task(tasks):
            (label, prob), rest = p.top[0], p.top[1:]
            rest_text = ", ".join(f"{c} {q:.3f}" for c, q in rest)
            table.add_row(_subject(p), label, f"{prob:.3f}", rest_text, *scored)
            continue
        cells = []
        for t in tasks:
            answer = p.tasks[t.name]
            scores = dict(answer.top)
            chosen = ", ".join(f"{c} {scores[c]:.3f}" if c in scores else c for c in answer.labels)
            cells.append(chosen or "[dim](none)[/]")
        table.add_row(_subject(p), *cells, *scored)
    if flagged:
        table.caption = (
            f"{flagged} image(s) {UNLIKE}: their answers are guesses among classes they may "
            "not belong to"
        )
    console.print(table)


def command(
    model: Path = typer.Argument(..., help="Model bundle folder (RUN/model)."),
    images: list[str] = typer.Argument(
        ...,
        help="Image files, folders or glob patterns; for a text model: texts, .txt files, "
        "folders of them, or CSV files (the model's text column).",
    ),
    top_k: int = typer.Option(3, "--top-k", "-k", help="How many classes per image and task."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table, csv or json."),
    runtime: Runtime = typer.Option(
        Runtime.torch,
        "--runtime",
        help="torch: the bundle as fitted; onnx: the exported MODEL/model.onnx in onnxruntime "
        "(exported first if missing; MODEL may also be an exported .onnx file).",
    ),
    tta: str = typer.Option("none", "--tta", help=TTA_HELP),
) -> None:
    """Predict every task's answer for images; unreadable files get an error row."""
    # the library loads numpy and onnxruntime: only when the command runs
    from headstart.features.tta import check_tta
    from headstart.model import load

    check_tta(tta)
    loaded: Model | OnnxClassifier
    if runtime is Runtime.onnx:
        from headstart.export import load_onnx

        loaded = load_onnx(model, notify=err_console.print)
    else:
        loaded = load(model)
    predictions = loaded.predict(images, top_k=top_k, tta=tta)
    tasks = list(loaded.tasks)
    scored = loaded.ood_threshold is not None
    if fmt is Format.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    elif fmt is Format.csv:
        k = min(top_k, len(tasks[0].classes))
        write_csv(predictions, tasks, k, scored)
    else:
        show_table(predictions, tasks, scored)


def register(app: typer.Typer) -> None:
    app.command("predict")(command)
