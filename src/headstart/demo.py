"""Where the bundled demo photos live."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from headstart.errors import PathNotFoundError

__all__ = ["demo_data_dir"]


def demo_data_dir() -> Path:
    """The folder of demo photos shipped inside the package (train/validation/test/<class>)."""
    path = Path(str(resources.files("headstart") / "demo_data"))
    if not (path / "train").is_dir():
        raise PathNotFoundError(f"demo data missing from the installation: {path}")
    return path
