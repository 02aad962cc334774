"""Data: scan a folder or CSV into a manifest, and decode images safely."""

from __future__ import annotations

from headstart.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, load_rgb, probe_image
from headstart.data.manifest import (
    DEFAULT_TASK,
    SPLITS,
    DuplicateGroup,
    Manifest,
    Problem,
    Sample,
    Task,
)
from headstart.data.scan import scan

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_TASK",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "DuplicateGroup",
    "Manifest",
    "Problem",
    "Sample",
    "Task",
    "load_rgb",
    "probe_image",
    "scan",
]
