"""``fit --preset fast|balanced|best [--time-limit 20m]``: spend a time budget on what pays.

- ``fast``: today's default, one probe on the configured backbone.
- ``balanced``: probes on the default backbone and efficientnet_lite1 and their fusion,
  combined by greedy ensemble selection when that validates better.
- ``best``: every offline built-in backbone (cheapest first), the fusion of all that were
  embedded, then greedy selection and stacking over those candidates; the best on validation
  is written.

Text data (a text column, or folders of ``.txt`` files) gets :data:`TEXT_PRESETS`: the text
encoders installed here as candidates (``minilm-l6``, then ``mpnet-base``), combined as above
but never fused (a bundle holds one text encoder per member).

Every candidate is scored on out-of-fold probabilities of the training images (the probe's
3-fold; combinations by an outer 5-fold, see :mod:`headstart.ensemble.combine`), never on the
held-out split that is reported.  The budget is checked before each step against an estimate
of its cost (embedding: images not yet cached x the backbone's relative cost x the rate
measured so far); a step that would overrun is skipped and ``ensemble.json`` says so, with
what each step took and bought (the leaderboard the report shows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import BackboneRef, resolve_backbone
from headstart.backbones.spec import fuse
from headstart.cache import CacheRoot
from headstart.config import FitConfig, load_config
from headstart.embedding import EmbeddedData, embed_data, scan_data
from headstart.ensemble import Member, combine, ensemble_result, layout, probe_member
from headstart.ensemble.combine import Combined
from headstart.errors import ConfigError, DataError, HeadstartError
from headstart.features.extract import resolve_engine
from headstart.features.store import model_key
from headstart.pipeline.fitting import _check_leakage, _with_report, fit
from headstart.probe import held_out_split
from headstart.result import FitResult, write_result
from headstart.runfolder import RunFolder
from headstart.stats import headline, task_metrics

__all__ = ["PRESETS", "TEXT_PRESETS", "Preset", "fit_preset", "parse_duration"]


@dataclass(frozen=True)
class Preset:
    """What a preset tries: backbones in order, the fusion, combination methods, a budget."""

    name: str
    backbones: tuple[str, ...]
    fusion: bool
    methods: tuple[str, ...]
    limit_s: float


PRESETS: dict[str, Preset] = {
    "fast": Preset("fast", (), False, (), 0.0),
    # the default backbone (so balanced keeps fast's model unless validation prefers another)
    # and the best accuracy per cost on clothing_small (lite1: 91.4% test at 2.1x the cost;
    # lite2 90.6% at 3.1x); the other sets only confirmed it
    "balanced": Preset(
        "balanced", ("mobilenet_v2", "efficientnet_lite1"), True, ("select",), 600.0
    ),
    "best": Preset(
        "best",
        ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite2", "efficientnet_lite1"),
        True,
        ("select", "stack"),
        1200.0,
    ),
}

#: The same presets on text data: text encoders, cheapest first, no fusion.
TEXT_PRESETS: dict[str, Preset] = {
    "balanced": Preset("balanced", ("minilm-l6", "mpnet-base"), False, ("select",), 600.0),
    "best": Preset("best", ("minilm-l6", "mpnet-base"), False, ("select", "stack"), 1200.0),
}

#: Embedding cost per image relative to mobilenet_v2 (multiply-adds at each input size,
#: checked against ONNX Runtime throughput on 2 cores), for the budget's estimates.
RELATIVE_COST = {
    "mobilenet_v2": 1.0,
    "efficientnet_lite0": 1.5,
    "efficientnet_lite1": 2.1,
    "efficientnet_lite2": 3.1,
    # texts, relative to minilm-l6 (a text preset's first candidate, which measures the rate):
    # banking77's 13,083 texts, the whole fit under the same load: 315 s against 1972 s
    "minilm-l6": 1.0,
    "mpnet-base": 6.3,
}
#: mobilenet_v2 images per second assumed before anything was measured in this run.
DEFAULT_RATE = 50.0
#: Seconds kept back for combining, writing the run and the report.
RESERVE_S = 30.0


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``20m`` or ``1.5h`` -> seconds; anything else is a one-line error."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    raw = text.strip().lower()
    scale = units.get(raw[-1:])
    number = raw[:-1] if scale is not None else raw
    try:
        value = float(number) * (scale or 1.0)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value:
        raise ConfigError(f"time limit {text!r} is not a duration; write e.g. 90s, 20m or 1.5h")
    return value


class _Clock:
    """The budget: elapsed, left, and the stage lines the progress shows."""

    def __init__(self, limit_s: float, say: Callable[[str], None] | None) -> None:
        self.start, self.limit, self.say = time.perf_counter(), limit_s, say

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def left(self) -> float:
        return self.limit - self.elapsed

    def stage(self, text: str) -> None:
        if self.say is not None:
            m, s = divmod(max(self.left, 0.0), 60)
            self.say(f"[{int(m)}:{int(s):02d} left] {text}")


def _uncached(ref: BackboneRef, shas: list[str], cfg: FitConfig) -> int:
    store = CacheRoot.for_config(cfg).store
    key = model_key(ref, resolve_engine(cfg.extract.engine))
    return sum(v is None for v in store.get_many(key, shas))


def _score(member_oof: dict[str, np.ndarray], embedded: EmbeddedData, rows: list[int]) -> float:
    """The mean over tasks of the out-of-fold headline score (accuracy or mAP)."""
    m = embedded.manifest
    scores = []
    for task in m.targets:
        cells = [tuple(m.samples[i].labels[task.name]) for i in rows]
        metrics = task_metrics(task, cells, member_oof[task.name], n_boot=0)
        scores.append(headline(metrics)[1].value)
    return float(np.mean(scores))


def fit_preset(
    data: str | Path,
    output: str | Path,
    preset: str,
    *,
    time_limit: float | None = None,
    config: FitConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    report: bool = True,
    say: Callable[[str], None] | None = None,
) -> FitResult:
    """Fit with a preset (module docstring) within ``time_limit`` seconds (default: the
    preset's); ``say`` receives the stage lines with the time left."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    cfg = config or load_config()
    spec = PRESETS[preset]
    if cfg.data.unlabelled is not None and spec.name != "fast":
        raise ConfigError(
            f"--unlabelled works with the probe, not --preset {preset}: drop --preset or use "
            "--preset fast"
        )
    if spec.name == "fast":
        return fit(
            data, output, config=cfg, overwrite=overwrite, progress=progress, report=report,
            strategy="probe",
        )  # fmt: skip
    limit = time_limit if time_limit is not None else spec.limit_s
    clock = _Clock(limit, say)
    run = RunFolder(output)
    run.check_output(overwrite)
    with run.lock():
        result = _search(data, run, cfg, spec, clock, progress)
        write_result(result)
        return _with_report(result, report)


def _search(
    data: str | Path,
    run: RunFolder,
    cfg: FitConfig,
    spec: Preset,
    clock: _Clock,
    progress: bool,
) -> FitResult:
    """Embed, fit candidates, combine, keep the best on validation (module docstring)."""
    cache = CacheRoot.for_config(cfg)
    manifest = scan_data(data, cfg, carve_val=False)
    if manifest.modality == "text":
        spec = TEXT_PRESETS[spec.name]
    shas = [s.sha256 for s in manifest.samples]
    steps: list[dict[str, Any]] = []
    members: list[Member] = []
    features: dict[str, np.ndarray] = {}
    refs: list[BackboneRef] = []
    rate = DEFAULT_RATE
    embedded: EmbeddedData | None = None
    rows: list[int] = []
    for name in spec.backbones:
        t0 = time.perf_counter()
        try:
            ref = resolve_backbone(name)
        except HeadstartError as exc:
            steps.append({"step": f"embed {name}", "skipped": str(exc)})
            continue
        todo = _uncached(ref, shas, cfg)
        estimate = todo * RELATIVE_COST.get(name, 3.0) / rate
        if refs and estimate > clock.left - RESERVE_S:
            steps.append(
                {"step": f"embed {name}", "skipped": f"needs ~{estimate:.0f} s of the "
                 f"{max(clock.left, 0):.0f} s left"}
            )  # fmt: skip
            continue
        clock.stage(f"embedding {len(shas)} {manifest.noun} with {name} ({todo} not cached)")
        got = embed_data(manifest, cfg, progress=progress, ref=ref)
        if embedded is None:  # the first backbone judges leakage for every candidate
            got, _, _ = _check_leakage(got, cfg, cache)
            manifest, shas = got.manifest, [s.sha256 for s in got.manifest.samples]
            embedded = got
            held = held_out_split(got)
            rows = [i for i, s in enumerate(manifest.samples) if s.split != held]
        elif len(got.manifest.samples) != len(manifest.samples):  # rows would not align
            lost = len(manifest.samples) - len(got.manifest.samples)
            raise DataError(
                f"{lost} image(s) that {embedded.backbone.name} read cannot be decoded for {name}; "
                "remove them (problems.csv of a plain fit lists them) and fit again"
            )
        ex = got.extraction
        if ex.n_computed and ex.seconds > 0:
            rate = ex.n_computed / ex.seconds * RELATIVE_COST.get(name, 3.0)
        clock.stage(f"fitting a probe on {name}")
        member = probe_member(name, ref, got.features, manifest, rows, cfg, cache)
        member.seconds = time.perf_counter() - t0
        members.append(member)
        features[ref.weights_sha256] = got.features
        refs.append(ref)
        steps.append(_step(f"probe {name}", member, embedded, rows))
    if embedded is None:
        raise ConfigError(f"preset {spec.name}: no backbone could be embedded; see ensemble.json")
    if spec.fusion and len(refs) > 1 and clock.left > RESERVE_S:
        t0 = time.perf_counter()
        fused = fuse(refs)
        clock.stage(f"fitting a probe on the fusion {fused.name}")
        X = np.hstack([features[r.weights_sha256] for r in refs])
        member = probe_member(fused.name, fused, X, manifest, rows, cfg, cache)
        member.seconds = time.perf_counter() - t0
        members.append(member)
        steps.append(_step(f"probe {fused.name}", member, embedded, rows))
    scores = {m.name: _score(m.oof or {}, embedded, rows) for m in members}
    best = max(members, key=lambda m: scores[m.name])
    choice: tuple[float, str, Combined] = (scores[best.name], best.name, _single(best))
    multi_label = [t.name for t in manifest.targets if t.multi_label]
    for method in spec.methods if len(members) > 1 else ():
        if multi_label:
            steps.append(
                {"step": f"ensemble {method}", "skipped": f"task {multi_label[0]!r} is "
                 "multi-label: ensembles combine multi-class tasks"}
            )  # fmt: skip
            continue
        if clock.left < RESERVE_S / 2:
            steps.append({"step": f"ensemble {method}", "skipped": "time limit reached"})
            continue
        t0 = time.perf_counter()
        clock.stage(f"combining {len(members)} candidates by {method}")
        _, slices = layout(members)
        combined = combine(members, slices, method, manifest, rows)
        score = _score(combined.oof, embedded, rows)
        steps.append(
            {"step": f"ensemble {method}", "cv": score, "seconds": time.perf_counter() - t0}
        )
        if score > choice[0]:
            choice = (score, f"ensemble {method}", combined)
    clock.stage(f"writing {choice[1]} (validation {choice[0]:.3f})")
    chosen = members if choice[2].method in spec.methods else [best]
    ref, _ = layout(chosen)
    extra = {"preset": spec.name, "time_limit_s": clock.limit, "chosen": choice[1], "steps": steps}
    return ensemble_result(
        run.path, manifest, rows, held_out_split(embedded), chosen, ref, choice[2], features,
        cfg, timings={"search": clock.elapsed}, extra=extra,
    )  # fmt: skip


def _single(member: Member) -> Combined:
    """One candidate written as it is (its own heads and out-of-fold probabilities)."""
    return Combined("single", dict(member.heads), dict(member.oof or {}))


def _step(label: str, member: Member, embedded: EmbeddedData, rows: list[int]) -> dict[str, Any]:
    assert member.oof is not None  # probe members always have out-of-fold probabilities
    return {"step": label, "cv": _score(member.oof, embedded, rows), "seconds": member.seconds}
