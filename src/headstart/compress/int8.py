"""Static int8 of an existing model: the same heads on an int8 copy of its backbone calibrated
on the data's training images (see :mod:`headstart.features.int8`)."""

from __future__ import annotations

from pathlib import Path

from headstart.cache import CacheRoot
from headstart.config import FitConfig, load_config
from headstart.embedding import scan_data
from headstart.errors import ConfigError, DataError
from headstart.model import load

__all__ = ["int8_bundle"]


def int8_bundle(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    config: FitConfig | None = None,
    cache: CacheRoot | None = None,
) -> Path:
    """Write the bundle at ``model_dir`` to ``out`` with a static int8 backbone calibrated on
    ``data``'s training images (scanned with ``config``'s split rules; default: the bundle's
    own config, so the training split is the one it was fitted on); the heads are kept as
    they are.  Returns ``out``."""
    model = load(model_dir, cache=cache)
    if config is None:
        recorded = model.info.get("config")
        try:
            config = load_config(base=recorded if isinstance(recorded, dict) else None)
        except ConfigError:  # an older release's config: the split rules' defaults
            config = load_config()
    manifest = scan_data(data, config)
    paths = [s.path for s in manifest.split("train")]
    if not paths:
        raise DataError(f"{data} has no training images to calibrate the int8 model on")
    return model.quantized(paths).save(Path(out))
