"""Generic ``timm:NAME`` and ``torchvision:NAME`` backbones: specs and weights via those libraries.

Weights come from the library's own cache (Hugging Face hub cache for timm, torch.hub's
checkpoint folder for torchvision); a download is tried only when online.  Offline and absent,
the user is told to pass ``--weights FILE``.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from headstart.backbones.builtin import torch_hub_checkpoints
from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.spec import (
    WEIGHTS_HINT,
    BackboneSpec,
    BackboneStatus,
    offline,
    split_name,
)
from headstart.errors import BackboneError, WeightsError

__all__ = [
    "cached_file",
    "find_weights",
    "generic_spec",
    "generic_status",
    "quick_status",
    "timm_cfg",
    "torchvision_weights",
]

HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")


def timm_cfg(arch: str) -> Any:
    """timm's pretrained config for ``arch``; unknown models raise ``BackboneError``."""
    # lazy: torch takes seconds to import; only this path needs it
    import timm

    if not timm.is_model(arch):
        raise BackboneError(f"unknown timm model '{arch}'; see timm.list_models() for the names")
    return timm.models.get_pretrained_cfg(arch)


def torchvision_weights(arch: str) -> Any:
    """The DEFAULT weights enum of a torchvision model; unknown models raise ``BackboneError``."""
    # lazy: torch takes seconds to import; only this path needs it
    import torchvision

    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError) as exc:
        known = ", ".join(sorted(torchvision.models.list_models())[:8])
        raise BackboneError(
            f"unknown torchvision model '{arch}'; known include {known}, ..."
        ) from exc


def _timm_preprocessing(cfg: Any) -> Preprocessing:
    size = int(cfg.input_size[-1])
    crop_pct = float(cfg.crop_pct or 0.875)
    interp = cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic") else "bilinear"
    return Preprocessing(math.floor(size / crop_pct), size, cfg.mean, cfg.std, interp)


def _torchvision_preprocessing(weights: Any) -> Preprocessing:
    t = weights.transforms()
    resize = t.resize_size[0] if isinstance(t.resize_size, list) else t.resize_size
    crop = t.crop_size[0] if isinstance(t.crop_size, list) else t.crop_size
    return Preprocessing(int(resize), int(crop), t.mean, t.std, t.interpolation.value)


def generic_spec(name: str, library: str, arch: str) -> BackboneSpec:
    """The spec of a ``timm:``/``torchvision:`` backbone, read from its library's metadata."""
    if library == "timm":
        cfg = timm_cfg(arch)
        return BackboneSpec(name, None, None, None, _timm_preprocessing(cfg), f"timm {arch}")
    w = torchvision_weights(arch)
    top1 = w.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    return BackboneSpec(
        name,
        None,
        w.meta.get("num_params"),
        top1,
        _torchvision_preprocessing(w),
        f"torchvision {w}",
    )


def _online(host: str) -> bool:
    if offline():
        return False
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _cached(library: str, arch: str) -> Path | None:
    if library == "timm":
        cfg = timm_cfg(arch)
        if cfg.hf_hub_id:
            # lazy: optional, only to download from the hub
            from huggingface_hub import try_to_load_from_cache

            for filename in HF_FILENAMES:
                found = try_to_load_from_cache(cfg.hf_hub_id, filename)
                if isinstance(found, str):
                    return Path(found)
        url = cfg.url
    else:
        url = torchvision_weights(arch).url
    if url:
        path = torch_hub_checkpoints() / Path(urlparse(url).path).name
        if path.is_file():
            return path
    return None


def _download(library: str, arch: str) -> Path:
    if library == "timm":
        cfg = timm_cfg(arch)
        if cfg.hf_hub_id:
            # lazy: optional, only to download from the hub
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(cfg.hf_hub_id, HF_FILENAMES[0]))
        url = cfg.url
    else:
        url = torchvision_weights(arch).url
    # lazy: torch takes seconds to import; only this path needs it
    import torch.hub

    path = torch_hub_checkpoints() / Path(urlparse(url).path).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(path), progress=True)
    return path


def find_weights(name: str, library: str, arch: str) -> Path:
    """The pretrained weights file of a generic backbone: cached, else downloaded when online."""
    path = _cached(library, arch)
    if path is not None:
        return path
    host = "huggingface.co" if library == "timm" else "download.pytorch.org"
    if _online(host):
        try:
            return _download(library, arch)
        except Exception as exc:  # any network/hub failure ends the same way for the user
            raise WeightsError(
                f"could not download weights for backbone '{name}' ({exc}); {WEIGHTS_HINT}"
            ) from exc
    raise WeightsError(
        f"no weights for backbone '{name}' offline (not in the {library} cache and no network); "
        f"{WEIGHTS_HINT}"
    )


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def cached_file(name: str) -> Path | None:
    """A weights file of ``name`` in its library's local cache, found by file name alone (no
    import of timm or torchvision): the Hugging Face hub cache for timm, torch.hub's
    checkpoints for torchvision (``resnet18-f37072fd.pth``, ``efficientnet_b0_rwightman-
    7f5810bc.pth``).  A quick look for listings; :func:`generic_status` is exact."""
    library, arch = split_name(name)
    candidates: list[Path] = []
    if library == "timm":  # timm's weights live on the hub (torch.hub names are torchvision's)
        for folder in sorted(_hf_hub_cache().glob(f"models--timm--{arch}.*")):
            candidates += [p for f in HF_FILENAMES for p in folder.glob(f"snapshots/*/{f}")]
    else:
        hub = torch_hub_checkpoints()
        candidates += sorted(hub.glob(f"{arch}-*.pth")) + sorted(hub.glob(f"{arch}_*-*.pth"))
    return next((p for p in candidates if p.is_file()), None)


def quick_status(name: str) -> BackboneStatus:
    """Availability of a generic backbone from its cache's file names (see
    :func:`cached_file`); the spec's figures are left unknown (they need the library)."""
    fallback = Preprocessing(256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    library, _ = split_name(name)
    spec = BackboneSpec(name, None, None, None, fallback, f"{library} model")
    path = cached_file(name)
    if path is None:
        return BackboneStatus(spec, False, f"no weights offline (not in the {library} cache)")
    return BackboneStatus(spec, True, f"weights: {path}")


def generic_status(name: str) -> BackboneStatus:
    """Availability of a generic backbone without downloading anything."""
    library, arch = split_name(name)
    try:
        spec = generic_spec(name, library, arch)
    except BackboneError as exc:
        fallback = Preprocessing(256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        return BackboneStatus(BackboneSpec(name, None, None, None, fallback, ""), False, str(exc))
    path = _cached(library, arch)
    if path is None:
        return BackboneStatus(spec, False, f"no weights offline (not in the {library} cache)")
    return BackboneStatus(spec, True, f"weights: {path}")
