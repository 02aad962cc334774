"""Fine-tuning on Lightning: freeze → unfreeze recipe, augmentation, schedules, resume, DDP.

Importing this package imports torch and lightning; the rest of headstart imports it lazily.
"""

from __future__ import annotations

from headstart.finetune.evaluation import linear_head_export
from headstart.finetune.module import FinetuneModule
from headstart.finetune.recipe import backbone_blocks, param_groups, set_batchnorm_eval
from headstart.finetune.run import FinetuneOutcome, finetune
from headstart.finetune.strategy import fit_with_strategy, resume_run

__all__ = [
    "FinetuneModule",
    "FinetuneOutcome",
    "backbone_blocks",
    "finetune",
    "fit_with_strategy",
    "linear_head_export",
    "param_groups",
    "resume_run",
    "set_batchnorm_eval",
]
