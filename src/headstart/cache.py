"""The cache root: one folder that holds every cache headstart keeps, and the one place that
decides where it is.

``extract.cache_dir`` in the config when set, else ``$HEADSTART_CACHE``, else
``$XDG_CACHE_HOME/headstart``, else ``~/.cache/headstart``.  Under it:

- ``tables/`` and ``onnx/``: backbone features per image (one table per model key) and the
  ONNX backbones (:class:`~headstart.features.EmbeddingStore`);
- ``weights/``: backbone weights converted once to safetensors, copied into bundles;
- ``heads/``: fitted heads keyed by their inputs (:func:`headstart.heads.cache.fit_cached`);
- ``report-overlays/``: Grad-CAM thumbnails of the report's error gallery and the 2-D points
  of its embedding map;
- ``pixel-similarity/``: pixel checks of near-duplicate candidate pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headstart.backbones import BackboneRef, fuse
from headstart.features.store import EmbeddingStore
from headstart.fsutil import check_entry, default_cache_root, entry_digest, seal

if TYPE_CHECKING:
    from headstart.config import FitConfig

__all__ = ["CacheRoot", "default_cache_root", "loaded_backbone", "portable_weights"]


@dataclass(frozen=True)
class CacheRoot:
    """Where every cache lives; build it with :meth:`of` or :meth:`for_config`."""

    path: Path

    @classmethod
    def of(cls, folder: str | Path | None = None) -> CacheRoot:
        """``folder``, or the default root when None."""
        return cls(Path(folder).expanduser() if folder is not None else default_cache_root())

    @classmethod
    def for_config(cls, config: FitConfig) -> CacheRoot:
        """The root a config names (``extract.cache_dir``), else the default."""
        return cls.of(config.extract.cache_dir)

    @classmethod
    def from_config_dict(cls, config: dict[str, Any] | None) -> CacheRoot:
        """The root named by a resolved config as written in ``config.yaml`` or a bundle."""
        extract = (config or {}).get("extract") or {}
        return cls.of(extract.get("cache_dir"))

    @property
    def store(self) -> EmbeddingStore:
        """Embeddings and ONNX backbones."""
        return EmbeddingStore(self.path)

    @property
    def heads(self) -> Path:
        return self.path / "heads"

    @property
    def overlays(self) -> Path:
        return self.path / "report-overlays"

    @property
    def pixel_pairs(self) -> Path:
        return self.path / "pixel-similarity"

    def weights(self, sha256: str) -> Path:
        """Where the safetensors copy of the weights with ``sha256`` is kept."""
        return self.path / "weights" / f"{sha256}.safetensors"


def portable_weights(ref: BackboneRef, cache: CacheRoot) -> Path | tuple[Path, ...]:
    """The backbone's weights as a safetensors file of the module's own state dict, converted
    once per weights hash and kept in ``cache`` (verified on every use), so bundles carry them
    without rebuilding the model.  A fused backbone: one file per part, in order."""
    if ref.is_fused:
        return tuple(_portable(part, cache) for part in ref.parts)
    return _portable(ref, cache)


def _portable(ref: BackboneRef, cache: CacheRoot) -> Path:
    if ref.weights_path is not None and ref.weights_path.suffix == ".safetensors":
        return ref.weights_path
    cached = cache.weights(ref.weights_sha256)
    if not check_entry(cached):
        # torch is imported only when a backbone must really be built (once per weights hash)
        from headstart.backbones.model import save_weights

        save_weights(ref.build(), cached)
        seal(cached)
    return cached


def loaded_backbone(ref: BackboneRef, files: Mapping[str, Any], cache: CacheRoot) -> BackboneRef:
    """``ref`` (a bundle's backbone; ``files``: the bundle's file digests) keyed by the bytes
    actually loaded: each part's recorded weights hash stands only when its weights file is
    those weights (or this cache's own conversion of them); otherwise the file's digest
    replaces it, so no bundle can write into another backbone's cache entries.  A part read
    from the registry (no file in the bundle) was checked against its hash on reading."""
    parts = []
    # lazy: the bundle module loads scikit-learn (the heads); `headstart report` on a cached
    # run must not pay for it just to name the cache root
    from headstart.bundle import weights_files

    for part, name in zip(ref.members, weights_files(ref), strict=True):
        digest = files.get(name)
        if (
            isinstance(digest, str)
            and part.weights_path is not None
            and digest
            not in (part.weights_sha256, entry_digest(cache.weights(part.weights_sha256)))
        ):
            part = replace(part, weights_sha256=digest)
        parts.append(part)
    return fuse(parts) if ref.is_fused else parts[0]
