"""Ensembles on the embedding cache: candidate members (a head per task on one backbone's or a
fusion's embeddings, with out-of-fold probabilities of the training images), their combination
by voting, greedy selection or stacking, and the result written as one bundle.

:func:`headstart.ensemble.runs.ensemble_runs` builds one from existing runs
(``headstart ensemble``); :mod:`headstart.pipeline.presets` from candidates it fits itself
(``fit --preset``).
"""

from __future__ import annotations

from headstart.ensemble.assemble import ensemble_result
from headstart.ensemble.combine import METHODS, Combined, combine
from headstart.ensemble.members import Member, layout, probe_member

__all__ = ["METHODS", "Combined", "Member", "combine", "ensemble_result", "layout", "probe_member"]
