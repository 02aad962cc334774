"""``fit`` and ``resume``: the orchestration of scan → embed → probe or fine-tune → run folder →
report (nothing below this package calls back up into it)."""

from __future__ import annotations

from headstart.pipeline.fitting import STRATEGIES, fit, resume

__all__ = ["STRATEGIES", "fit", "resume"]
