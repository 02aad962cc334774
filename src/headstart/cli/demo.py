"""``headstart demo``: fit, evaluate and predict on the small photo set shipped in the package."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from headstart.cli.fit import report_fit
from headstart.cli.predict import show_table
from headstart.cli.render import console


def command(
    output: Path = typer.Option(Path("runs/demo"), "-o", "--output", help="Run folder to write."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Run the whole pipeline on the bundled demo photos (clothing, 10 classes, CC0)."""
    # the library: when the command runs
    from headstart.demo import demo_data_dir
    from headstart.pipeline import fit

    data = demo_data_dir()
    console.rule("headstart demo")
    console.print(
        f"Data: {data} — real photos of clothes in 10 classes (a CC0 subset of clothing_small), "
        "with train/validation/test folders. Backbone: mobilenet_v2 (ImageNet weights, offline)."
    )
    start = time.perf_counter()
    result = fit(data, output, overwrite=True, progress=not quiet)
    report_fit(result)
    examples = sorted((data / "test").rglob("*.jpg"))[::20][:4]
    console.rule("predict")
    console.print(f"headstart predict {result.bundle_dir} <images>  (truth is the folder name)")
    show_table(result.model.predict(examples), list(result.tasks))
    test = result.metrics.get("test", {}).get(result.tasks[0].name)
    console.rule("summary")
    if test is not None and hasattr(test, "accuracy"):
        acc = test.accuracy
        console.print(
            f"Test accuracy {acc.value:.1%} (95% CI {acc.low:.1%}-{acc.high:.1%}) on {test.n} "
            f"held-out photos, {time.perf_counter() - start:.0f} s in all."
        )
    console.print(
        f"Try: headstart predict {result.bundle_dir} PHOTO.jpg | headstart evaluate "
        f"{result.bundle_dir} {data} | headstart fit YOUR/FOLDER -o runs/mine"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(command)
