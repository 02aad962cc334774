"""``headstart export MODEL``: the whole model as one ONNX file (one output per task), checked
against torch; a text model's graph takes token ids, with its tokenizer.json written beside it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from headstart.cli.render import console


def _say(line: str) -> None:
    console.print(line, soft_wrap=True, markup=False, highlight=False)


def command(
    model: Path = typer.Argument(..., help="Model bundle folder (RUN/model)."),
    fmt: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="File to write (default: MODEL/model.onnx)."
    ),
    quantize: str | None = typer.Option(
        None,
        "--quantize",
        help="Also write model.int8.onnx, a copy with dynamic int8 MatMul/Gemm weights (the "
        "convolutions stay float32; a text model's are quantized per channel). A model fitted "
        "with extract.precision=int8 is exported with its static int8 backbone without this "
        "option.",
    ),
    check_images: list[Path] | None = typer.Option(
        None,
        "--check-images",
        help="Images or folders for the parity check (default: the demo test photos); "
        "folders named after a class also give the int8 accuracy change.",
    ),
    check_texts: list[str] | None = typer.Option(
        None,
        "--check-texts",
        help="A text model's parity check texts: texts, .txt files, folders of them or CSV "
        "files (the model's text column); default: a few built-in sentences and a long one.",
    ),
    tolerance: float = typer.Option(
        1e-4, "--tolerance", help="Largest allowed probability difference onnxruntime vs torch."
    ),
) -> None:
    """Export the model (backbone + every task's head) as one ONNX graph, one output per task
    (and ood_score when the model has an OOD scorer), with a parity check."""
    from headstart.export import export_model  # the library: when it runs

    result = export_model(
        model,
        fmt=fmt,
        output=output,
        quantize=quantize,
        check_images=check_images or None,
        tolerance=tolerance,
        check_texts=check_texts or None,
    )
    _say(f"wrote {result.path}")
    doc = json.loads(Path(result.metadata_path).read_text(encoding="utf-8"))
    what = result.checked
    if doc.get("modality") == "text":
        _say(f"wrote {result.path.with_name(doc['tokenizer']['file'])} (the tokenizer)")
        _say(f"wrote {result.metadata_path} (inputs, outputs, tokenizer steps, tasks)")
    else:
        inputs = "inputs" if "inputs" in doc else "input"
        _say(f"wrote {result.metadata_path} ({inputs}, outputs, preprocessing, tasks)")
    _say(
        f"parity: max abs probability difference onnxruntime vs torch "
        f"{result.max_abs_diff:.2e} on {result.n_check_images} {what} "
        f"(tolerance {result.tolerance:g})"
    )
    bundle = [p.bundle_max_abs_diff for p in result.tasks.values() if p.bundle_max_abs_diff]
    if bundle:
        _say(f"  vs the model's own predictions: max abs difference {max(bundle):.2e}")
    if len(result.tasks) > 1:
        for name, p in result.tasks.items():
            _say(f"  {name}: output '{p.output}', max abs difference {p.max_abs_diff:.2e}")
    if result.ood is not None:
        _say(f"  ood_score (out of distribution): max abs difference {result.ood.max_abs_diff:.2e}")
    if result.int8_backbone is not None:
        _say(
            f"int8 backbone: max abs probability difference vs the model's own int8 "
            f"predictions {result.int8_backbone.max_abs_diff:.2e}"
        )
    q = result.int8
    if q is None:
        return
    _say(f"wrote {q.path}")
    if len(q.tasks) <= 1 and q.top1_agreement is not None:  # one multi-class task: as ever
        accuracy = _accuracy(q.n_labelled, q.accuracy_fp32, q.accuracy_int8, result.checked)
        agreement = f"top-1 agreement {q.top1_agreement:.1%}"
        _say(f"int8: max abs difference vs fp32 {q.max_abs_diff:.2e}, {agreement}; {accuracy}")
        return
    for name, t in q.tasks.items():
        if t.top1_agreement is None:  # a multi-label task: no top-1
            _say(f"int8 {name}: max abs probability difference vs fp32 {t.max_abs_diff:.2e}")
            continue
        accuracy = _accuracy(
            t.n_labelled, t.accuracy_fp32 or 0.0, t.accuracy_int8 or 0.0, result.checked
        )
        diff = f"max abs difference vs fp32 {t.max_abs_diff:.2e}"
        _say(f"int8 {name}: {diff}, top-1 agreement {t.top1_agreement:.1%}; {accuracy}")


def _accuracy(n_labelled: int, fp32: float, int8: float, checked: str = "images") -> str:
    if not n_labelled and checked == "texts":
        return "accuracy not measured (the check texts carry no labels)"
    if not n_labelled:
        return "accuracy not measured (no check image is in a folder named after a class)"
    change = f"{fp32:.1%} -> {int8:.1%} ({int8 - fp32:+.1%})"
    return f"accuracy on {n_labelled} labelled images {change}"


def register(app: typer.Typer) -> None:
    """Add ``export`` to the app."""
    app.command("export")(command)
