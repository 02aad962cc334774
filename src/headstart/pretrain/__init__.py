"""Self-supervised adaptation of a pretrained backbone on unlabelled images (lightly's SimCLR,
BYOL and DINO on the last blocks of the network), written as a backbone folder that resolves
like a backbone name.  Importing this package loads neither torch nor lightly."""

from __future__ import annotations

from headstart.pretrain.options import PretrainOptions
from headstart.pretrain.run import PretrainResult, image_paths, pretrain

__all__ = ["PretrainOptions", "PretrainResult", "image_paths", "pretrain"]
