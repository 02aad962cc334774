"""``fit``: image folder or CSV → manifest → cached embeddings → heads → evaluated bundle, or
fine-tuning (``--strategy finetune``), or the probe first and fine-tuning when it pays (``auto``).

``auto``: the probe (cached embeddings + logistic heads) costs seconds, fine-tuning minutes, so
the probe runs first.  Fine-tuning is tried unless the probe's validation score already reaches
``strategy.auto_skip_above`` (default 0.98): little is left to gain, and what is left is within
the noise of a few hundred validation images.  When both ran, the better validation score wins
(ties keep the probe: same inference cost, fewer moving parts); ``finetune.json`` says what was
chosen and why.  The score is the mean over tasks of accuracy (multi-class) and mAP
(multi-label).

``unlabelled`` (``data.unlabelled``, the probe only): those images are embedded once through
the cache, less any that are also labelled images (same bytes: they are counted and left out),
and the probe's heads learn from them too (:func:`headstart.probe.semi_supervised`); run.json's
``semi_supervised`` record says what was chosen, how many pseudo-labels were used and how
accurate they were on held-out labelled images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from headstart.backbones import require_single, resolve_backbone
from headstart.cache import CacheRoot
from headstart.config import FitConfig, load_config
from headstart.data import Manifest
from headstart.data.leakage import check_threshold, dedupe, find_near_duplicates
from headstart.embedding import (
    EmbeddedData,
    check_pretrained,
    check_trainable,
    embed_data,
    for_data,
    scan_data,
)
from headstart.errors import ConfigError
from headstart.explore.labels import label_issues
from headstart.features.neighbours import cross_group_pairs
from headstart.heads import check_label_coverage, create_head
from headstart.pipeline.unlabelled import check_semi_supervised, embed_for_probe, with_unlabelled
from headstart.probe import held_out_split, probe, val_score
from headstart.ranking import rank_backbones
from headstart.report import build_report
from headstart.result import FitResult, write_result
from headstart.runfolder import FinetuneRecord, RunFolder
from headstart.stats import headline

__all__ = ["STRATEGIES", "fit", "resume"]

STRATEGIES = ("probe", "finetune", "auto", "tfidf")


def fit(
    data: str | Path,
    output: str | Path,
    *,
    config: FitConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    report: bool = True,
    strategy: str | None = None,
    unlabelled: str | Path | None = None,
) -> FitResult:
    """Fit a classifier on the images in ``data`` (class folders or a CSV) and write the run
    folder ``output`` (bundle in ``output/model``, manifest, problems, config, metrics, and with
    ``report`` the HTML report ``output/report.html``).  ``strategy`` (default
    ``config.strategy.kind``): ``probe`` (heads on cached embeddings), ``finetune`` (Lightning,
    see :mod:`headstart.finetune`), ``auto`` (probe first, fine-tune when it pays) or, for
    text, ``tfidf`` (:mod:`headstart.pipeline.words`).  ``unlabelled`` (default
    ``config.data.unlabelled``): a folder or CSV of unlabelled images for a semi-supervised
    probe (module docstring)."""
    cfg = config or load_config()
    kind = strategy or cfg.strategy.kind
    if kind not in STRATEGIES:
        raise ConfigError(f"unknown strategy {kind!r}; valid: {', '.join(STRATEGIES)}")
    cfg = with_unlabelled(cfg, unlabelled, kind)
    _check_outside(Path(output), cfg.data.unlabelled)
    if kind == "tfidf":
        from headstart.pipeline.words import fit_tfidf  # scikit-learn's text tools: text only

        cfg = _with_strategy(cfg, kind)
        run = RunFolder(output)
        with run.lock():
            return _with_report(fit_tfidf(data, run, cfg, overwrite=overwrite), report)
    cfg = for_data(_with_strategy(cfg, kind))  # text data (a text column): a text encoder
    if kind != "probe":
        from headstart.finetune.run import require_float32  # lazy: torch, needed to train anyway

        require_float32(cfg)  # before anything is read or written
    run = RunFolder(output)
    _check_outside(Path(output), data)
    with run.lock():
        if kind == "probe":
            result = _fit_probe(data, run, cfg, overwrite=overwrite, progress=progress)
        else:
            result = _fit_tuned(
                data, run, cfg, overwrite=overwrite, progress=progress, resume=False
            )
        return _with_report(result, report)


def resume(run_dir: str | Path, *, progress: bool = True, report: bool = True) -> FitResult:
    """Continue a killed fine-tuning run from its last checkpoint (same data, config, seed)."""
    run = RunFolder(run_dir)
    record = run.read_resume()
    if record is None:
        raise ConfigError(
            f"{run.path} is not a resumable run (no resume.json); only fine-tuning runs resume"
        )
    if record.finished:
        raise ConfigError(f"{run.path} finished already; its model is in {run.bundle}")
    if record.strategy == "distill":
        raise ConfigError(
            f"{run.path} is a distillation: resume it with headstart distill --resume"
        )
    if record.strategy not in ("finetune", "auto"):
        raise ConfigError(
            f"{run.path} resume.json names strategy {record.strategy!r}; resumable: finetune, auto"
        )
    cfg = _with_strategy(run.read_config(), record.strategy)  # what resume.json says it was
    with run.lock():
        result = _fit_tuned(record.data, run, cfg, overwrite=False, progress=progress, resume=True)
        return _with_report(result, report)


def _check_outside(output: Path, data: object) -> None:
    """Refuse a run folder inside the image folder it is fitted on: the next fit on that data
    would scan the run's files (report thumbnails, the error gallery) as training images."""
    if not isinstance(data, (str, Path)) or not Path(data).is_dir():
        return
    root, out = Path(data).resolve(), output.resolve()
    if out == root or root in out.parents:
        raise ConfigError(
            f"output {output} is inside the data folder {data}; the next fit on that data "
            "would read the run's files as images: choose an -o outside it"
        )


def _with_strategy(cfg: FitConfig, kind: str) -> FitConfig:
    return cfg.model_copy(update={"strategy": cfg.strategy.model_copy(update={"kind": kind})})


def _with_report(result: FitResult, report: bool) -> FitResult:
    if report:
        t0 = time.perf_counter()
        result.report = build_report(result.run_dir)
        result.timings["report"] = time.perf_counter() - t0
    return result


def _fit_probe(
    data: str | Path | Manifest | EmbeddedData,
    run: RunFolder,
    cfg: FitConfig,
    *,
    overwrite: bool,
    progress: bool,
    ranking: dict[str, Any] | None = None,
    dropped: int = 0,
) -> FitResult:
    """The probe's run: scan (no val carved), embed, check leakage, fit, write; data already
    embedded (``auto`` keeping its probe, ``dropped`` label issues already left out) goes
    straight to the leakage check."""
    run.check_output(overwrite)
    # fail fast on a bad head or backbone, before any scanning or extraction
    create_head(cfg.head.kind, **cfg.head.params)
    check_pretrained(cfg)
    source = data.manifest if isinstance(data, EmbeddedData) else data
    if cfg.backbone.name == "auto":
        cfg, ranking = _resolve_auto_backbone(source, cfg, progress)
    ref = resolve_backbone(cfg.backbone.name, cfg.backbone.weights)
    cache = CacheRoot.for_config(cfg)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    manifest = source if isinstance(source, Manifest) else scan_data(source, cfg, carve_val=False)
    if (for_text := for_data(cfg, manifest)) is not cfg:  # a folder of .txt files
        cfg, ref = for_text, resolve_backbone(for_text.backbone.name)
    for task in manifest.targets:  # before the images are embedded: fail fast
        check_label_coverage(task, [s.labels[task.name] for s in manifest.split("train")])
    check_semi_supervised(manifest, cfg)
    if isinstance(data, EmbeddedData):
        embedded = data
    else:
        embedded = embed_data(manifest, cfg, progress=progress, ref=ref)
    timings["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    embedded, near, deduped = _check_leakage(embedded, cfg, cache)
    timings["leakage"] = time.perf_counter() - t0
    if not isinstance(data, EmbeddedData):  # ``auto`` hands over data it already judged
        embedded, dropped = _drop_label_issues(embedded, cfg)
    unlabelled, facts = None, None
    if (pool := cfg.data.unlabelled) is not None:
        t0 = time.perf_counter()
        unlabelled, facts = embed_for_probe(pool, manifest, embedded.backbone, cfg, progress)
        timings["embed_unlabelled"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    outcome = probe(embedded, cfg, cache, unlabelled)
    timings["head"] = time.perf_counter() - t0
    if facts is not None:
        facts["left_out_unlike"] = outcome.unlike_unlabelled
        facts["tasks"] = outcome.semi_supervised or {}
    result = FitResult(
        run.path,
        embedded.manifest,
        outcome.heads,
        embedded.backbone,  # the ref embedded with (int8 under extract.precision=int8)
        cfg,
        metrics=outcome.metrics,
        probabilities=outcome.probabilities,
        extraction=embedded.extraction,
        trained_on=outcome.trained_on,
        timings=timings,
        validation=outcome.validation,
        calibration=outcome.calibration,
        near_duplicates=near,
        deduped=deduped,
        label_issues_dropped=dropped,
        ranking=ranking,
        ood=outcome.ood,
        semi_supervised=facts,
    )
    t0 = time.perf_counter()
    write_result(result)
    result.timings["write"] = time.perf_counter() - t0
    return result


def _resolve_auto_backbone(
    data: str | Path | Manifest, cfg: FitConfig, progress: bool
) -> tuple[FitConfig, dict[str, Any] | None]:
    """``backbone.name: auto`` -> the backbone :func:`rank_backbones` chooses."""
    if cfg.backbone.name != "auto":
        return cfg, None
    ranking = rank_backbones(data, cfg, progress=progress)
    backbone = cfg.backbone.model_copy(update={"name": ranking.chosen})
    return cfg.model_copy(update={"backbone": backbone}), ranking.to_dict()


def _check_leakage(
    embedded: EmbeddedData, cfg: FitConfig, cache: CacheRoot
) -> tuple[EmbeddedData, list[Any], int]:
    """Cross-split near-duplicates, and with ``data.dedupe`` the data without them."""
    threshold = cfg.data.near_duplicate_threshold
    check_threshold(threshold)
    samples = embedded.manifest.samples
    shas = [s.sha256 for s in samples]
    splits = [s.split for s in samples]
    keys = embedded.extraction.keys
    pairs = cache.store.cross_pairs(keys, shas, splits, threshold) if keys else None
    if pairs is None:  # not from the store (int8 calibration views, say): the same search
        pairs = cross_group_pairs(embedded.features, splits, threshold)
    near = find_near_duplicates(embedded.manifest, pairs, pixel_cache=cache.pixel_pairs)
    if not cfg.data.dedupe:
        return embedded, near, 0
    manifest, rows = dedupe(embedded.manifest, near)
    check_trainable(manifest)
    return embedded.subset(rows, manifest), near, len(embedded.manifest.samples) - len(rows)


def _drop_label_issues(embedded: EmbeddedData, cfg: FitConfig) -> tuple[EmbeddedData, int]:
    """With ``data.drop_label_issues``: the data without the training images whose label
    confident learning calls wrong (out-of-fold probabilities of a logistic probe on the
    images that train the model: every split but the held-out one), recorded as problems."""
    if not cfg.data.drop_label_issues:
        return embedded, 0
    m = embedded.manifest
    task = next((t for t in m.targets if not t.multi_label), None)
    if task is None:
        raise ConfigError("--drop-label-issues needs a multi-class task; this data has none")
    held = held_out_split(embedded)
    rows = [i for i, s in enumerate(m.samples) if s.split != held]
    found = label_issues(embedded, task=task.name, rows=rows, seed=cfg.data.seed)
    reasons = {
        m.samples[int(found.rows[i])].path: (
            f"label issue: given '{found.given[i]}', the embeddings suggest "
            f"'{found.suggested[i]}' (--drop-label-issues)"
        )
        for i in found.ranked
    }
    if not reasons:
        return embedded, 0
    manifest = m.without(reasons, reasons)
    check_trainable(manifest)
    kept = [i for i, s in enumerate(m.samples) if s.path not in reasons]
    return embedded.subset(kept, manifest), len(reasons)


# ------------------------------------------------------------------ fine-tuning and auto


def validation_score(result: FitResult) -> float:
    """The mean over tasks of the main validation score (accuracy or mAP); NaN without val."""
    per_task = result.metrics.get("val", {})
    scores = [headline(m)[1].value for m in per_task.values()]
    return float(sum(scores) / len(scores)) if scores else float("nan")


def _fit_tuned(
    data: str | Path,
    run: RunFolder,
    cfg: FitConfig,
    *,
    overwrite: bool,
    progress: bool,
    resume: bool,
) -> FitResult:
    """``finetune``, or ``auto``: the probe's val score (heads fitted on train alone) against
    fine-tuning's on the same val split; the probe is refitted on every training image when it
    wins (val joins train where a test split exists)."""
    # Lightning and torch load only when a network is really trained
    from headstart.finetune import data_recipe, finetune, start_record

    if cfg.strategy.kind == "finetune":
        dropped = 0
        source: str | Path | Manifest = data
        if cfg.data.drop_label_issues and not resume:
            run.check_output(overwrite)
            judged, dropped = _drop_label_issues(
                embed_data(scan_data(data, cfg), cfg, progress=progress), cfg
            )
            source = judged.manifest
        tuned = finetune(
            source, cfg, run.path, overwrite=overwrite, progress=progress, resume=resume
        )
        tuned.label_issues_dropped = dropped
        return tuned
    if not resume:
        run.check_output(overwrite)
    require_single(
        cfg.backbone.name, "--strategy auto", "fit a probe on the fused features (--strategy probe)"
    )
    create_head(cfg.head.kind, **cfg.head.params)
    check_pretrained(cfg)
    cfg, ranking = _resolve_auto_backbone(data, cfg, progress)
    manifest = scan_data(data, cfg)
    cfg = data_recipe(cfg, manifest)  # text: the text recipe, written by start_record below
    ref = resolve_backbone(cfg.backbone.name, cfg.backbone.weights)
    embedded = embed_data(manifest, cfg, progress=progress, ref=ref)
    embedded, dropped = _drop_label_issues(embedded, cfg)
    probe_score = val_score(embedded, cfg, CacheRoot.for_config(cfg))
    skip = cfg.strategy.auto_skip_above
    record = FinetuneRecord("auto", probe_val_score=probe_score)
    if probe_score >= skip:
        record.chosen, record.reason = (
            "probe",
            (
                f"probe val score {probe_score:.3f} >= strategy.auto_skip_above {skip:g}: "
                "fine-tuning skipped"
            ),
        )
        return _keep_probe(embedded, run, cfg, record, progress, ranking, dropped)
    if not resume:
        start_record(data, cfg, run, "auto")
    tuned = finetune(
        embedded.manifest, cfg, run.path, progress=progress, resume=resume, write=False
    )
    tuned_score = validation_score(tuned)
    facts = tuned.finetune or FinetuneRecord("finetune")
    facts.strategy, facts.probe_val_score, facts.finetune_val_score = (
        "auto",
        probe_score,
        tuned_score,
    )
    if tuned_score > probe_score:
        facts.chosen = "finetune"
        facts.reason = f"fine-tune val score {tuned_score:.3f} > probe {probe_score:.3f}"
        tuned.finetune, tuned.ranking = facts, ranking
        tuned.label_issues_dropped = dropped
        write_result(tuned)
        run.mark_finished()
        return tuned
    facts.chosen = "probe"
    facts.reason = f"probe val score {probe_score:.3f} >= fine-tune {tuned_score:.3f}"
    return _keep_probe(embedded, run, cfg, facts, progress, ranking, dropped)


def _keep_probe(
    embedded: EmbeddedData,
    run: RunFolder,
    cfg: FitConfig,
    record: FinetuneRecord,
    progress: bool,
    ranking: dict[str, Any] | None,
    dropped: int,
) -> FitResult:
    """The probe refitted on every training image of ``embedded`` (its val split joins train
    where a test split exists), written with the auto decision."""
    probe_cfg = _with_strategy(cfg, "probe")
    result = _fit_probe(
        embedded,
        run,
        probe_cfg,
        overwrite=True,
        progress=progress,
        ranking=ranking,
        dropped=dropped,
    )
    result.finetune = record
    run.write_finetune(record)
    run.mark_finished()
    return result
