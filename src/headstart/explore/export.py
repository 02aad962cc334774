"""Bootstrap labels from clusters: one class folder per cluster, which ``headstart fit`` reads.

Images are copied by default: a user renames ``cluster_03`` to ``sandals``, moves strays between
folders and fits, and none of that touches the originals.  ``mode="symlink"`` links instead
(no extra space; the scan follows links), for large data.  Hard links are never made: editing a
"copy" would edit the original.  HDBSCAN's noise rows (-1) belong to no cluster and are left
out.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

from headstart.errors import ConfigError
from headstart.explore.analysis import Exploration

__all__ = ["export_folders"]

_MODES = ("copy", "symlink")


def export_folders(
    exploration: Exploration,
    dest: str | Path,
    method: str = "kmeans",
    *,
    mode: Literal["copy", "symlink"] = "copy",
) -> Path:
    """Write ``dest/cluster_NN/<image>`` for every clustered row of ``method``; ``dest`` must
    not exist or be empty.  Returns ``dest``."""
    if method not in exploration.clusters:
        known = ", ".join(exploration.clusters)
        raise ConfigError(f"unknown cluster method '{method}'; known: {known}")
    if mode not in _MODES:
        raise ConfigError(f"unknown export mode '{mode}'; known: {', '.join(_MODES)}")
    out = Path(dest).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"export destination '{out}' exists and is not an empty folder")
    ids = exploration.clusters[method]
    width = max(2, len(str(max(int(ids.max()), 0))))
    used: set[Path] = set()
    for row, cluster_id in enumerate(ids):
        if cluster_id < 0:
            continue
        source = exploration.paths[row]
        target = _free_name(out / f"cluster_{int(cluster_id):0{width}d}" / source.name, used)
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "copy":
            shutil.copy2(source, target)
        else:
            os.symlink(source.resolve(), target)
    return out


def _free_name(path: Path, used: set[Path]) -> Path:
    """``path``, or ``name-1.jpg``, ``name-2.jpg``... when two images share a file name."""
    candidate, n = path, 0
    while candidate in used:
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    used.add(candidate)
    return candidate
