"""Learning-rate schedules of the recipe, per parameter group and per optimiser step.

Training has two phases: head-only (the frozen epochs) and everything trainable.  Each phase
gets its own warm-up and decay, as fastai's ``fine_tune`` runs one cycle per phase; the backbone
groups sit at factor 0 during the head-only phase (they get no gradients then anyway).
``plateau`` is epoch-based (ReduceLROnPlateau on the validation accuracy) and is built by the
module, not here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SCHEDULES", "PhasePlan", "lr_factors"]

SCHEDULES = ("cosine", "onecycle", "step", "plateau")
_FLOOR = 0.01  # cosine ends at 1% of the peak rather than 0: the last steps still learn


@dataclass(frozen=True)
class PhasePlan:
    """Step counts: total optimiser steps, steps of the head-only phase, warm-up per phase."""

    total: int
    frozen: int
    warmup: int
    steps_per_epoch: int
    step_epochs: int = 3


def _shape(kind: str, t: int, length: int, plan: PhasePlan) -> float:
    """Factor at step ``t`` of a phase of ``length`` steps."""
    length = max(length, 1)
    if kind == "onecycle":
        peak = max(int(0.25 * length), 1)
        if t < peak:
            return 0.04 + 0.96 * (1 - math.cos(math.pi * t / peak)) / 2
        frac = (t - peak) / max(length - peak, 1)
        return 1e-3 + (1 - 1e-3) * (1 + math.cos(math.pi * min(frac, 1.0))) / 2
    warm = min(plan.warmup, length - 1)
    if t < warm:
        return (t + 1) / (warm + 1)
    if kind == "step":
        epoch = t // max(plan.steps_per_epoch, 1)
        return float(0.1 ** (epoch // plan.step_epochs))
    if kind == "plateau":
        return 1.0
    frac = (t - warm) / max(length - warm, 1)
    return _FLOOR + (1 - _FLOOR) * (1 + math.cos(math.pi * min(frac, 1.0))) / 2


def lr_factors(kind: str, plan: PhasePlan, is_head: list[bool]) -> list[Callable[[int], float]]:
    """One multiplicative factor function per parameter group (``LambdaLR`` lambdas)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}")
    second = plan.total - plan.frozen

    def head(step: int) -> float:
        if step < plan.frozen:
            return _shape(kind, step, plan.frozen, plan)
        return _shape(kind, step - plan.frozen, second, plan)

    def body(step: int) -> float:
        if step < plan.frozen:
            return 0.0
        return _shape(kind, step - plan.frozen, second, plan)

    return [head if h else body for h in is_head]
