"""Ensemble members: one head per task on a backbone's (or a fusion's) embeddings, fitted on
the training rows, with the out-of-fold probabilities of those rows that selection and
stacking learn from (so no row is ever combined by weights fitted on a prediction of a model
that saw it)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from headstart.backbones import BackboneRef
from headstart.backbones.spec import fuse
from headstart.cache import CacheRoot
from headstart.config import FitConfig
from headstart.data import Manifest
from headstart.errors import ConfigError
from headstart.probe import fit_heads, out_of_fold

__all__ = ["Member", "layout", "probe_member"]


@dataclass
class Member:
    """A candidate model: ``heads`` (task -> fitted head) read the embeddings of ``ref``;
    ``oof`` (task -> (n_train, C) probabilities in the task's class order, uncalibrated) are
    out-of-fold over the training rows, None where no honest estimate exists (a fine-tuned
    backbone saw those rows)."""

    name: str
    ref: BackboneRef
    heads: dict[str, Any]
    oof: dict[str, np.ndarray] | None
    seconds: float = 0.0
    kind: str = "probe"


def layout(members: Sequence[Member]) -> tuple[BackboneRef, list[tuple[int, int]]]:
    """The fused backbone holding every member's backbones once (fused members' parts first,
    in their order, so each member reads one contiguous block) and each member's columns."""
    order: list[BackboneRef] = []
    seen: set[str] = set()
    for member in sorted(members, key=lambda m: -len(m.ref.members)):
        for part in member.ref.members:
            if part.weights_sha256 not in seen:
                seen.add(part.weights_sha256)
                order.append(part)
    if any(p.feature_dim is None for p in order):
        unknown = next(p.name for p in order if p.feature_dim is None)
        raise ConfigError(f"backbone '{unknown}' has no known feature size to ensemble with")
    starts, at = {}, 0
    for part in order:
        starts[part.weights_sha256] = at
        at += int(part.feature_dim or 0)
    slices = []
    for member in members:
        parts = member.ref.members
        start = starts[parts[0].weights_sha256]
        stop = start + sum(int(p.feature_dim or 0) for p in parts)
        expected = [starts[p.weights_sha256] for p in parts]
        if expected != [
            start + sum(int(q.feature_dim or 0) for q in parts[:i]) for i in range(len(parts))
        ]:
            raise ConfigError(
                f"member '{member.name}' reads backbones {member.ref.name} in an order the "
                "other members' fusions split up; ensemble it with single-backbone members"
            )
        slices.append((start, stop))
    return fuse(order), slices


def probe_member(
    name: str,
    ref: BackboneRef,
    features: np.ndarray,
    manifest: Manifest,
    rows: list[int],
    cfg: FitConfig,
    cache: CacheRoot | None,
    *,
    kind: str = "logistic",
    params: dict[str, Any] | None = None,
) -> Member:
    """A member whose heads (``kind``/``params``) are fitted on ``features[rows]`` (rows of
    ``manifest``), with out-of-fold probabilities of those rows."""
    t0 = time.perf_counter()
    head = cfg.head.model_copy(update={"kind": kind, "params": dict(params or {})})
    member_cfg = cfg.model_copy(update={"head": head})
    heads = fit_heads(manifest, features, member_cfg, rows, cache)
    X = features[rows]
    oof: dict[str, np.ndarray] = {}
    for task in manifest.targets:
        cells = [tuple(manifest.samples[i].labels[task.name]) for i in rows]
        proba = out_of_fold(task, heads[task.name], X, cells)
        if proba is None:
            raise ConfigError(
                f"too few training images per class of '{task.name}' to cross-validate "
                "ensemble members; ensembles need at least 2 per class"
            )
        oof[task.name] = proba
    return Member(name, ref, heads, oof, time.perf_counter() - t0)
