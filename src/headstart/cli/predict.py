"""``headstart predict MODEL IMAGES...``: top-k per image as a table, CSV or JSON."""

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
from headstart.features.tta import check_tta
from headstart.model import Model, Prediction, load

if TYPE_CHECKING:
    from headstart.export import OnnxClassifier


class Runtime(str, Enum):
    torch = "torch"
    onnx = "onnx"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _write_csv(predictions: list[Prediction], k: int) -> None:
    writer = csv.writer(sys.stdout)
    ranks = [f"{name}_{i}" for i in range(1, k + 1) for name in ("label", "probability")]
    writer.writerow(["path", *ranks, "error"])
    for p in predictions:
        cells: list[str] = []
        for i in range(k):
            label, prob = p.top[i] if i < len(p.top) else ("", None)
            cells += [label, "" if prob is None else f"{prob:.6f}"]
        writer.writerow([str(p.path), *cells, p.error or ""])


def _write_task_csv(predictions: list[Prediction], tasks: list[str]) -> None:
    """One column of chosen labels (joined with |) and one of scores per task."""
    writer = csv.writer(sys.stdout)
    writer.writerow(["path", *(f"{t}{suffix}" for t in tasks for suffix in ("", ":top")), "error"])
    for p in predictions:
        cells: list[str] = []
        for t in tasks:
            answer = p.tasks.get(t) if p.tasks else None
            if answer is None:
                cells += ["", ""]
                continue
            cells += ["|".join(answer.labels), " ".join(f"{c}={q:.6f}" for c, q in answer.top)]
        writer.writerow([str(p.path), *cells, p.error or ""])


def _show_task_table(predictions: list[Prediction], tasks: list[str]) -> None:
    table = Table()
    table.add_column("image", overflow="fold")
    for t in tasks:
        table.add_column(t, overflow="fold")
    for p in predictions:
        if p.error or not p.tasks:
            blanks = [""] * (len(tasks) - 1)
            table.add_row(display_path(p.path), f"[red]error[/] {p.error}", *blanks)
            continue
        cells = []
        for t in tasks:
            answer = p.tasks[t]
            scores = dict(answer.top)
            chosen = ", ".join(f"{c} {scores[c]:.3f}" if c in scores else c for c in answer.labels)
            cells.append(chosen or "[dim](none)[/]")
        table.add_row(display_path(p.path), *cells)
    console.print(table)


def _show_table(predictions: list[Prediction]) -> None:
    table = Table()
    table.add_column("image", overflow="fold")
    table.add_column("prediction")
    table.add_column("p", justify="right")
    table.add_column("next", overflow="fold")
    for p in predictions:
        if p.error:
            table.add_row(display_path(p.path), "[red]error[/]", "", p.error)
            continue
        (label, prob), rest = p.top[0], p.top[1:]
        rest_text = ", ".join(f"{c} {q:.3f}" for c, q in rest)
        table.add_row(display_path(p.path), label, f"{prob:.3f}", rest_text)
    console.print(table)


def command(
    model: Path = typer.Argument(..., help="Model bundle folder (RUN/model)."),
    images: list[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="How many classes per image."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table, csv or json."),
    runtime: Runtime = typer.Option(
        Runtime.torch,
        "--runtime",
        help="torch: the bundle as fitted; onnx: the exported MODEL/model.onnx in onnxruntime "
        "(exported first if missing; MODEL may also be an exported .onnx file).",
    ),
    tta: str = typer.Option("none", "--tta", help=TTA_HELP),
) -> None:
    """Predict the top-k classes of images; unreadable files get an error row."""
    check_tta(tta)
    loaded: Model | OnnxClassifier
    if runtime is Runtime.onnx:
        from headstart.export import load_onnx

        loaded = load_onnx(model, notify=err_console.print)
    else:
        loaded = load(model)
    predictions = loaded.predict(images, top_k=top_k, tta=tta)
    tasks = [t.name for t in loaded.tasks] if isinstance(loaded, Model) else []
    if fmt is Format.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    elif len(tasks) > 1 or (isinstance(loaded, Model) and not loaded.is_plain):
        if fmt is Format.csv:
            _write_task_csv(predictions, tasks)
        else:
            _show_task_table(predictions, tasks)
    elif fmt is Format.csv:
        _write_csv(predictions, min(top_k, len(loaded.classes)))
    else:
        _show_table(predictions)


def register(app: typer.Typer) -> None:
    app.command("predict")(command)
