"""``headstart compare A B DATA``: is model B really better than model A?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from headstart.cli.options import TASK_HELP, load_model
from headstart.cli.render import console

if TYPE_CHECKING:
    from headstart.stats.paired import Comparison


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def show_comparison(c: Comparison) -> None:
    """Both models' scores, the B - A intervals, per-class (per-label) F1, the verdict."""
    metric = c.metric
    console.print(
        f"{c.n} images. A: {metric} {100 * c.score_a:.1f}%, macro-F1 {100 * c.macro_f1_a:.1f}%; "
        f"B: {metric} {100 * c.score_b:.1f}%, macro-F1 {100 * c.macro_f1_b:.1f}%"
    )
    d = c.macro_f1_diff
    right = "exact label set right" if c.multi_label else "right"
    console.print(
        f"macro-F1 B - A: {100 * d.value:+.1f} points "
        f"(95% CI {100 * d.low:+.1f}..{100 * d.high:+.1f}); "
        f"only A {right} on {c.only_a_right}, only B {right} on {c.only_b_right}"
        + (f" (McNemar p={c.p_value:.3g})" if c.multi_label else "")
    )
    noun = "label" if c.multi_label else "class"
    table = Table(title=f"F1 per {noun}", title_justify="left")
    columns = [noun, "A", "B", "B - A", "support"]
    if c.multi_label:
        columns += ["AP A", "AP B"]
    for column in columns:
        table.add_column(column, justify="left" if column == noun else "right")
    for r in c.per_class:
        cells = [r.name, _pct(r.f1_a), _pct(r.f1_b), f"{100 * r.diff:+.1f}", str(r.support)]
        if c.multi_label:
            cells += [_pct(r.ap_a), _pct(r.ap_b)]
        table.add_row(*cells)
    console.print(table)
    console.print(f"[bold]{c.verdict}[/]")


def command(
    model_a: Path = typer.Argument(..., help="Model bundle A (RUN/model)."),
    model_b: Path = typer.Argument(..., help="Model bundle B."),
    data: Path = typer.Argument(..., help="Labelled images: class/split folders or a CSV."),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    split: str | None = typer.Option(
        None, "--split", help="Split folder (default test, else val)."
    ),
    n_boot: int = typer.Option(2000, "--n-boot", help="Paired bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also write JSON here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config value (extract.cache_dir)."
    ),
) -> None:
    """Paired comparison of one task: McNemar's exact test, bootstrap CIs of B - A, per-class
    F1 (a multi-label task: the mAP interval decides, per-label AP and F1)."""
    from headstart.studies.compare import compare_models  # the library: when it runs

    a, b = load_model(model_a, config, set_), load_model(model_b, config, set_)
    c = compare_models(
        a, b, data, task=task, split=split, n_boot=n_boot, seed=seed, progress=not quiet
    )
    if len(a.tasks) > 1 or c.multi_label:
        console.print(f"Task {a.task(c.task).describe()}")
    show_comparison(c)
    if output is not None:
        from headstart.fsutil import atomic_write_text

        atomic_write_text(output, json.dumps(c.to_dict(), indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.command("compare")(command)
