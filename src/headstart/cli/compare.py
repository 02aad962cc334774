"""``headstart compare A B DATA``: is model B really better than model A?"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from headstart.cli.render import console


def command(
    model_a: Path = typer.Argument(..., help="Model bundle A (RUN/model)."),
    model_b: Path = typer.Argument(..., help="Model bundle B."),
    data: Path = typer.Argument(..., help="Labelled images: class/split folders or a CSV."),
    split: str | None = typer.Option(
        None, "--split", help="Split folder (default test, else val)."
    ),
    n_boot: int = typer.Option(2000, "--n-boot", help="Paired bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also write JSON here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Paired comparison: McNemar's exact test, bootstrap CIs of B - A, per-class F1."""
    from headstart.studies.compare import compare_models  # the library: when it runs

    c = compare_models(
        model_a, model_b, data, split=split, n_boot=n_boot, seed=seed, progress=not quiet
    )
    console.print(
        f"{c.n} images. A: accuracy {100 * c.accuracy_a:.1f}%, macro-F1 {100 * c.macro_f1_a:.1f}%; "
        f"B: accuracy {100 * c.accuracy_b:.1f}%, macro-F1 {100 * c.macro_f1_b:.1f}%"
    )
    d = c.macro_f1_diff
    console.print(
        f"macro-F1 B - A: {100 * d.value:+.1f} points "
        f"(95% CI {100 * d.low:+.1f}..{100 * d.high:+.1f}); "
        f"only A right on {c.only_a_right}, only B right on {c.only_b_right}"
    )
    table = Table(title="F1 per class", title_justify="left")
    for column in ("class", "A", "B", "B - A", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for r in c.per_class:
        table.add_row(
            r.name,
            f"{100 * r.f1_a:.1f}",
            f"{100 * r.f1_b:.1f}",
            f"{100 * r.diff:+.1f}",
            str(r.support),
        )
    console.print(table)
    console.print(f"[bold]{c.verdict}[/]")
    if output is not None:
        from headstart.fsutil import atomic_write_text

        atomic_write_text(output, json.dumps(c.to_dict(), indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.command("compare")(command)
