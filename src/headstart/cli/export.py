"""``headstart export MODEL``: the whole model as one ONNX file, checked against torch."""

from __future__ import annotations

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
        None, "--quantize", help="Also write a dynamically quantized copy (int8)."
    ),
    check_images: list[Path] | None = typer.Option(
        None,
        "--check-images",
        help="Images or folders for the parity check (default: the demo test photos); "
        "folders named after a class also give the int8 accuracy change.",
    ),
    tolerance: float = typer.Option(
        1e-4, "--tolerance", help="Largest allowed probability difference onnxruntime vs torch."
    ),
) -> None:
    """Export the model (backbone + head + softmax) as one ONNX graph with a parity check."""
    from headstart.export import export_model

    result = export_model(
        model,
        fmt=fmt,
        output=output,
        quantize=quantize,
        check_images=check_images or None,
        tolerance=tolerance,
    )
    _say(f"wrote {result.path}")
    _say(f"wrote {result.metadata_path} (input, preprocessing, classes)")
    _say(
        f"parity: max abs probability difference onnxruntime vs torch "
        f"{result.max_abs_diff:.2e} on {result.n_check_images} images "
        f"(tolerance {result.tolerance:g})"
    )
    q = result.int8
    if q is not None:
        _say(f"wrote {q.path}")
        change = q.accuracy_int8 - q.accuracy_fp32
        accuracy = (
            f"accuracy on {q.n_labelled} labelled images {q.accuracy_fp32:.1%} -> "
            f"{q.accuracy_int8:.1%} ({change:+.1%})"
            if q.n_labelled
            else "accuracy not measured (no check image is in a folder named after a class)"
        )
        _say(
            f"int8: max abs difference vs fp32 {q.max_abs_diff:.2e}, top-1 agreement "
            f"{q.top1_agreement:.1%}; {accuracy}"
        )


def register(app: typer.Typer) -> None:
    """Add ``export`` to the app."""
    app.command("export")(command)
