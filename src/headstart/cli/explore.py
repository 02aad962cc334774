"""``headstart explore DATA -o OUT``: a map of the data, clusters, outliers, label issues,
near-duplicates and class overlap, from the cached embeddings."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from headstart.cli.options import LABEL_COLUMN_HELP, TASK_HELP, TEXT_COLUMN_HELP, build_config
from headstart.cli.render import console

if TYPE_CHECKING:
    from headstart.explore.analysis import Exploration

_METHODS = ("kmeans", "hdbscan", "agglomerative")  # headstart.explore.clusters.METHODS


def _cell(value: float | None, name: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.0f}" if name == "k" else f"{value:.3f}"


def show_exploration(e: Exploration, output: Path) -> None:
    """What a person reads first: sizes, cluster scores, the top findings, the files."""
    kind = f"{len(e.classes)} classes" if e.labelled else "unlabelled"
    noun = "texts" if e.texts is not None else "images"
    console.print(f"Explored {len(e.paths)} {noun} ({kind})")
    table = Table(title="Clusters", title_justify="left")
    columns = ["k", "silhouette", *(("purity", "ari", "nmi") if e.labelled else ())]
    table.add_column("method")
    for name in columns:
        table.add_column(name, justify="right")
    for method, scores in e.cluster_metrics.items():
        table.add_row(method, *(_cell(scores.get(name), name) for name in columns))
    console.print(table)
    if e.labelled:
        console.print(f"Label issues: {len(e.label_issues)} {noun} flagged (label_issues.csv)")
    top = sorted(range(len(e.paths)), key=lambda i: -float(e.outlier_score[i]))[:5]
    console.print("Most unusual: " + ", ".join(e.relative(i) for i in top))
    if e.class_overlap:
        pairs = ", ".join(f"{o.class_a}/{o.class_b} ({o.score:.2f})" for o in e.class_overlap[:3])
        console.print(f"Most confused classes: {pairs} (class_overlap.csv)")
    if e.near_duplicates:
        console.print(f"Near-duplicates: {len(e.near_duplicates)} pairs (near_duplicates.csv)")
    for note in e.notes:
        console.print(f"Note: {note}")
    console.print(f"Written to {output}: map.html, clusters.csv, outliers.csv, label_issues.csv")


def command(
    data: Path = typer.Argument(
        ..., help="Image folder (class sub-folders, or unlabelled images) or a CSV (path,label)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the CSVs and map.html."),
    backbone: str | None = typer.Option(None, "-b", "--backbone", help="Backbone name."),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    unlabelled: bool = typer.Option(
        False, "--unlabelled", help="Read DATA as unlabelled images even if it has class folders."
    ),
    export_folders: Path | None = typer.Option(
        None,
        "--export-folders",
        help="Also write one folder per cluster here (copies): rename them, then headstart fit.",
    ),
    by: str = typer.Option(
        "kmeans", "--by", help=f"Clusters for --export-folders: {', '.join(_METHODS)}."
    ),
    no_map: bool = typer.Option(False, "--no-map", help="Skip map.html (CSVs only)."),
    text_column: str | None = typer.Option(None, "--text-column", help=TEXT_COLUMN_HELP),
    label_column: list[str] = typer.Option([], "--label-column", help=LABEL_COLUMN_HELP),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Explore DATA: a 2-D map (PCA, t-SNE, UMAP) with thumbnails, clusters (k-means, HDBSCAN,
    agglomerative), outliers, label issues (confident learning on out-of-fold probabilities),
    near-duplicates and class overlap, written as CSVs and one offline page, OUT/map.html."""
    from headstart.explore.export import export_folders as write_folders  # the library
    from headstart.explore.run import explore

    if export_folders is not None and by not in _METHODS:
        raise typer.BadParameter(f"unknown --by '{by}'; valid: {', '.join(_METHODS)}")
    cfg = build_config(
        config, set_, text_column=text_column, label_column=label_column, backbone=backbone
    )
    found = explore(
        data,
        output,
        config=cfg,
        progress=not quiet,
        labelled=False if unlabelled else None,
        task=task,
        page=not no_map,
    )
    show_exploration(found, output)
    if export_folders is not None:
        dest = write_folders(found, export_folders, by)
        console.print(f"Cluster folders ({by}) in {dest}: rename them, then headstart fit {dest}")


def register(app: typer.Typer) -> None:
    """Add ``explore`` to the app."""
    app.command("explore")(command)
