"""Fine-tuning on Lightning: freeze → unfreeze recipe, augmentation, schedules, resume, DDP.

Importing this package imports torch and lightning; the rest of headstart imports it lazily.
"""

from __future__ import annotations

from headstart.finetune.distill import distill, resume_distill
from headstart.finetune.evaluation import linear_head_export
from headstart.finetune.module import FinetuneModule
from headstart.finetune.recipe import backbone_blocks, param_groups, set_batchnorm_eval
from headstart.finetune.run import (
    build_parts,
    data_recipe,
    finetune,
    scratch_recipe,
    start_record,
)

__all__ = [
    "FinetuneModule",
    "backbone_blocks",
    "build_parts",
    "data_recipe",
    "distill",
    "finetune",
    "linear_head_export",
    "param_groups",
    "resume_distill",
    "scratch_recipe",
    "set_batchnorm_eval",
    "start_record",
]
