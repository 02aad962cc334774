"""``explore(data, output)``: embed (through the cache), analyse, write the files and the map."""

from __future__ import annotations

from pathlib import Path

from headstart.backbones import BackboneRef
from headstart.cache import CacheRoot
from headstart.config import FitConfig, load_config
from headstart.errors import ConfigError
from headstart.explore.analysis import Exploration, analyse
from headstart.explore.source import read_source
from headstart.explore.writing import write_files

__all__ = ["explore"]


def explore(
    data: str | Path,
    output: str | Path,
    *,
    config: FitConfig | None = None,
    backbone: str | None = None,
    progress: bool = True,
    labelled: bool | None = None,
    task: str | None = None,
    page: bool = True,
    ref: BackboneRef | None = None,
) -> Exploration:
    """Explore ``data`` and write the findings into the folder ``output``.

    ``data``: a class-folder tree or CSV (as ``headstart fit`` reads it), or a folder of
    unlabelled images; ``labelled``: None decides (see :mod:`headstart.explore.source`), False
    reads any folder as unlabelled images.  ``backbone`` overrides ``config.backbone.name``;
    ``task`` picks the multi-class task of a multi-task data set.  Writes the CSVs and
    ``summary.json`` of :mod:`headstart.explore.writing` and, when ``page``, the interactive
    ``map.html`` (:mod:`headstart.explore.page`).
    """
    cfg = config or load_config()
    if backbone is not None:
        cfg = cfg.model_copy(
            update={"backbone": cfg.backbone.model_copy(update={"name": backbone})}
        )
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output '{out}' exists and is not a folder")
    source = read_source(data, cfg, labelled=labelled, task=task, progress=progress, ref=ref)
    exploration = analyse(
        source.features,
        source.paths,
        source.labels,
        shas=source.shas,
        root=source.root,
        task=source.task,
        seed=cfg.data.seed,
        pixel_cache=CacheRoot.for_config(cfg).pixel_pairs,
        near_duplicate_threshold=cfg.data.near_duplicate_threshold,
        notes=source.notes,
        texts=source.texts,
        store=CacheRoot.for_config(cfg).store,
        keys=source.keys,
    )
    write_files(exploration, out)
    if page:
        from headstart.explore.page import write_map  # the map: numpy/PIL work only when asked

        cache = CacheRoot.for_config(cfg).overlays  # t-SNE/UMAP coordinates, verified
        write_map(out / "map.html", exploration, seed=cfg.data.seed, cache=cache)
    return exploration
