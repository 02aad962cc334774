"""``compare-strategies``: training from scratch vs a linear probe vs fine-tuning, per backbone,
over several seeds, scored on images no strategy used for selection.

Strategies (every one gets the same split of a seed):

* ``probe``: the configured head on cached embeddings of the train split, as ``fit`` does.
* ``finetune``: the Lightning recipe of :mod:`headstart.finetune`; val picks the best checkpoint
  and stops training early.
* ``scratch``: the same architecture and training loop from the library's random initialisation
  (``backbone.pretrained: false``, :func:`headstart.finetune.run.scratch_recipe`).
* ``tfidf`` (text data): word and character TF-IDF with a logistic regression
  (:class:`headstart.heads.tfidf.TfidfHead`) fitted on the train split's texts; no backbone, so
  it runs once per seed whatever the backbones (its backbone column reads ``tfidf``).

Text data (a CSV with ``data.text_column``, or folders of ``.txt`` files) compares ``tfidf``,
``probe`` and ``finetune`` by default, the backbone defaulting to the text encoder
(:func:`headstart.embedding.for_data`); image data compares ``scratch``, ``probe`` and
``finetune``.  ``scratch`` is for images only.

Held-out split of each seed (:func:`held_out`): fine-tuning selects on val, so val accuracy is
optimistic; every strategy is scored on a test split instead.  Data with a test split keeps it;
data with train and val only has its val scored as test and a new stratified val carved from
train (``data.val_fraction``, seed); data with train only gets val and test carved from train;
data without splits is split at random per seed (repeated hold-out).  The carving is
:func:`headstart.data.splits.stratified_assign`, the one ``scan`` uses.

Seed ``s`` sets ``data.seed`` (the split, where headstart makes it) and ``train.seed`` (and the
probe head's ``random_state`` unless the config sets it).

Every run is scored on one task (``task``, default the first): its main score (accuracy, or
mAP for a multi-label task) and macro-F1 on the test split, multi-label labels decided by
thresholds tuned on val (as ``fit`` does).  Fine-tuning trains every task's head at once; only
the chosen task is scored.  The statistics are in :mod:`headstart.studies.strategy_stats`.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import get_spec, require_single, resolve_backbone
from headstart.config import FitConfig, load_config
from headstart.data import DuplicateGroup, Manifest, Task
from headstart.data.manifest import predicted_labels
from headstart.data.splits import strata, stratified_assign
from headstart.embedding import embed_data, for_data, scan_data
from headstart.errors import ConfigError
from headstart.fsutil import atomic_write_text
from headstart.heads import (
    check_label_coverage,
    create_head,
    task_head,
    task_proba,
    task_target,
    thresholds_of,
    tune_thresholds,
)
from headstart.stats import headline, task_metrics
from headstart.studies.scoring import label_text, main_metric
from headstart.studies.strategy_stats import (
    Key,
    RunScore,
    StrategyComparison,
    best_row,
    contrast,
    results_csv,
    summarise_rows,
)

__all__ = [
    "IMAGE_STRATEGIES",
    "STRATEGIES",
    "TEXT_STRATEGIES",
    "HeldOut",
    "StrategyComparison",
    "compare_strategies",
    "held_out",
    "write_comparison",
]

STRATEGIES = ("scratch", "probe", "finetune", "tfidf")
IMAGE_STRATEGIES = ("scratch", "probe", "finetune")
"""What image data compares by default."""
TEXT_STRATEGIES = ("tfidf", "probe", "finetune")
"""What text data compares by default."""
TFIDF = "tfidf"
OUTPUT_FILES = ("results.csv", "comparison.json", "table.md")
OUTPUT_FOLDERS = ("runs", "splits")


@dataclass(frozen=True)
class HeldOut:
    """One seed's split: train fits, val selects (fine-tuning), test is only scored."""

    seed: int
    manifest: Manifest
    scored: str
    """How the test split came about, in words."""


def _seeded(cfg: FitConfig, seed: int, **data: Any) -> FitConfig:
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"seed": seed, **data})})


def _resplit(manifest: Manifest, *, val: float, test: float, seed: int, source: str) -> Manifest:
    """Given val becomes test; train is re-split (stratified, duplicates kept together)."""
    train = [s for s in manifest.samples if s.split == "train"]
    first = manifest.targets[0]  # scan stratifies on the first task too
    by = strata([s.labels[first.name] for s in train])
    carved = stratified_assign(
        by, [s.sha256 for s in train], val_fraction=val, test_fraction=test, seed=seed
    )
    new = dict(zip((s.path for s in train), carved, strict=True))
    samples = [
        replace(s, split=new[s.path] if s.split == "train" else "test") for s in manifest.samples
    ]
    split_of = {s.path: s.split for s in samples}
    duplicates = [
        DuplicateGroup(g.sha256, g.paths, tuple(split_of.get(p, "") for p in g.paths))
        for g in manifest.duplicates
    ]
    return replace(manifest, samples=samples, duplicates=duplicates, split_source=source)


def held_out(data: str | Path, config: FitConfig, seed: int) -> HeldOut:
    """Scan ``data`` for ``seed`` and make sure it has a test split no strategy selects on
    (see the module docstring)."""
    d = config.data
    manifest = scan_data(data, _seeded(config, seed))
    if "test" in manifest.splits_present():
        return HeldOut(seed, manifest, f"test: {manifest.split_source}")
    given = scan_data(data, _seeded(config, seed, val_fraction=0.0))  # the data's own splits
    val, test = f"{d.val_fraction * 100:g}%", f"{d.test_fraction * 100:g}%"
    if "val" in given.splits_present():
        source = f"the data's val split, used as test; val carved from train ({val}, seed {seed})"
        new = _resplit(given, val=d.val_fraction, test=0.0, seed=seed, source=source)
    elif d.test_fraction > 0 and given.split_source in ("folders", "csv"):
        source = (
            f"{given.split_source}: val and test carved from train ({val}, {test}, seed {seed})"
        )
        new = _resplit(given, val=d.val_fraction, test=d.test_fraction, seed=seed, source=source)
    else:
        raise ConfigError(
            "compare-strategies scores every strategy on a held-out test split, and this data "
            "gets none: set data.test_fraction > 0 (e.g. --set data.test_fraction=0.2)"
        )
    return HeldOut(seed, new, f"test: {source}")


@dataclass
class _Embeddings:
    """Pooled features of every sample of a backbone, by path (extracted once per comparison)."""

    features: np.ndarray
    index: dict[Path, int]
    seconds: float
    computed: int
    cached: int


def _embed(manifest: Manifest, cfg: FitConfig, progress: bool) -> _Embeddings:
    embedded = embed_data(manifest, cfg, progress=progress)
    ex = embedded.extraction
    index = {s.path: i for i, s in enumerate(embedded.manifest.samples)}
    return _Embeddings(embedded.features, index, ex.seconds, ex.n_computed, ex.n_cached)


@dataclass
class _Scored:
    """One run's test images: true labels, probabilities of the task, its thresholds."""

    paths: list[Path]
    cells: list[tuple[str, ...]]
    proba: np.ndarray
    thresholds: np.ndarray | None


def _probe(held: HeldOut, cfg: FitConfig, emb: _Embeddings, task: Task) -> _Scored:
    """The task's head on the train split's embeddings; a multi-label head's thresholds are
    tuned on val, as ``fit`` tunes them."""
    params = dict(cfg.head.params)
    if "random_state" in create_head(cfg.head.kind).get_params() and "random_state" not in params:
        params["random_state"] = held.seed
    head = task_head(task, cfg.head.kind, params)

    def split(name: str) -> tuple[list[Path], list[tuple[str, ...]], np.ndarray]:
        kept = [s for s in held.manifest.split(name) if s.path in emb.index]
        X = emb.features[[emb.index[s.path] for s in kept]]
        return [s.path for s in kept], [tuple(s.labels[task.name]) for s in kept], X

    _, cells, X = split("train")
    check_label_coverage(task, cells)
    head.fit(X, task_target(task, cells))
    _, val_cells, X_val = split("val")
    if task.multi_label and val_cells:
        head.thresholds_ = tune_thresholds(
            task_target(task, val_cells), task_proba(task, head, X_val)
        )
    paths, test_cells, X_test = split("test")
    return _Scored(paths, test_cells, task_proba(task, head, X_test), thresholds_of(task, head))


def _tfidf(held: HeldOut, task: Task) -> _Scored:
    """TF-IDF and a logistic regression on the train split's texts (no embeddings)."""
    from headstart.heads.tfidf import TfidfHead  # scikit-learn's text tools: only for text

    train, test = held.manifest.split("train"), held.manifest.split("test")
    head = TfidfHead(random_state=held.seed)
    head.fit([s.text or "" for s in train], [s.labels[task.name][0] for s in train])
    proba = task_proba(task, head, np.asarray([s.text or "" for s in test], dtype=object))
    return _Scored([s.path for s in test], [tuple(s.labels[task.name]) for s in test], proba, None)


def _finetune(held: HeldOut, cfg: FitConfig, run_dir: Path, progress: bool, task: Task) -> _Scored:
    # lazy: torch takes seconds to import; only this path needs it
    from headstart.finetune import finetune

    shutil.rmtree(run_dir, ignore_errors=True)
    result = finetune(held.manifest, cfg, run_dir, progress=progress, write=False)
    # the trained weights are not kept: the comparison ships numbers, not models
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    record = asdict(result.finetune) if result.finetune is not None else {}
    atomic_write_text(run_dir / "finetune.json", json.dumps(record, indent=2) + "\n")
    test = result.manifest.split("test")
    return _Scored(
        [s.path for s in test],
        [tuple(s.labels[task.name]) for s in test],
        result.probabilities["test"][task.name],
        result.thresholds()[task.name],
    )


def _run_config(cfg: FitConfig, backbone: str, strategy: str, seed: int) -> FitConfig:
    scratch = strategy == "scratch"
    bb = cfg.backbone.model_copy(
        update={"name": backbone, "pretrained": not scratch}
        | ({"weights": None} if scratch else {})
    )
    kind = cfg.strategy.model_copy(update={"kind": "probe" if strategy == "probe" else "finetune"})
    return _seeded(cfg, seed).model_copy(
        update={
            "backbone": bb,
            "strategy": kind,
            "train": cfg.train.model_copy(update={"seed": seed}),
            "eval": cfg.eval.model_copy(update={"n_boot": 0}),
        }
    )


def _check_names(strategies: Sequence[str]) -> None:
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        got = ", ".join(repr(s) for s in bad) or "none"
        raise ConfigError(f"unknown strategy {got}; valid: {', '.join(STRATEGIES)}")


def _check_choices(
    strategies: Sequence[str], backbones: Sequence[str], seeds: Sequence[int], cfg: FitConfig
) -> None:
    _check_names(strategies)
    strategies = [s for s in strategies if s != TFIDF]  # it has no backbone to check
    if not strategies:
        return
    if not seeds:
        raise ConfigError("compare-strategies needs at least one seed (--seeds 1 or more)")
    if not backbones:
        raise ConfigError("compare-strategies needs at least one backbone")
    if cfg.backbone.weights is not None and len(backbones) > 1:
        raise ConfigError(
            f"backbone.weights ({cfg.backbone.weights}) fits one backbone, not "
            f"{len(backbones)}: compare one backbone, or drop the weights file"
        )
    pretrained = any(s != "scratch" for s in strategies)
    trained = [s for s in strategies if s != "probe"]
    for name in backbones:  # fail fast, before any scanning or training
        if trained:
            require_single(name, f"--strategies {','.join(trained)}", "compare one backbone")
        if pretrained:
            resolve_backbone(name, cfg.backbone.weights)
        else:
            get_spec(name)


def _check_modality(strategies: Sequence[str], text: bool, task: Task) -> None:
    """``scratch`` trains an image network; ``tfidf`` reads texts of a multi-class task."""
    if text and "scratch" in strategies:
        raise ConfigError(
            "strategy 'scratch' trains an image network from random weights; for text data "
            f"compare {', '.join(TEXT_STRATEGIES)}"
        )
    if not text and TFIDF in strategies:
        raise ConfigError(
            "strategy 'tfidf' reads texts; this data holds images (text data: a CSV with "
            "--text-column, or folders of .txt files)"
        )
    if TFIDF in strategies and task.multi_label:
        raise ConfigError(
            f"strategy 'tfidf' scores multi-class tasks; '{task.name}' is multi-label "
            "(compare probe and finetune on it)"
        )


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder")
    present = [f for f in (*OUTPUT_FILES, *OUTPUT_FOLDERS) if (out / f).exists()]
    if present and not overwrite:
        raise ConfigError(
            f"{out} already holds a comparison ({', '.join(present)}); pass --overwrite to "
            "replace it, or choose another -o"
        )
    if any(f in OUTPUT_FILES for f in present):
        # an earlier comparison's runs and splits; never a folder this code did not write
        for sub in OUTPUT_FOLDERS:
            shutil.rmtree(out / sub, ignore_errors=True)


def write_comparison(result: StrategyComparison) -> Path:
    """Write ``results.csv``, ``comparison.json`` and ``table.md`` into ``result.output``."""
    out = result.output
    atomic_write_text(out / "results.csv", results_csv(result.runs, result.metric))
    atomic_write_text(out / "comparison.json", json.dumps(result.to_dict(), indent=2) + "\n")
    atomic_write_text(out / "table.md", result.table_markdown())
    return out


def _score(task: Task, scored: _Scored) -> tuple[float, float, dict[Path, str], dict[Path, str]]:
    """Main score and macro-F1 of one run, and each test image's predicted and true label
    text (a multi-label image's label set as one text)."""
    metrics = task_metrics(task, scored.cells, scored.proba, thresholds=scored.thresholds, n_boot=0)
    main = headline(metrics)[1]
    predicted = {
        p: label_text(task, predicted_labels(task, row, scored.thresholds))
        for p, row in zip(scored.paths, scored.proba, strict=True)
    }
    truth = {p: label_text(task, cell) for p, cell in zip(scored.paths, scored.cells, strict=True)}
    return main.value, metrics.macro_f1.value, predicted, truth


@dataclass
class _Session:
    """The state of one comparison while it runs: runs so far and the probe's embeddings."""

    cfg: FitConfig
    out: Path
    progress: bool
    result: StrategyComparison
    runs: dict[Key, RunScore] = field(default_factory=dict)
    predictions: dict[Key, dict[Path, str]] = field(default_factory=dict)
    truth: dict[int, dict[Path, str]] = field(default_factory=dict)
    embeddings: dict[str, _Embeddings] = field(default_factory=dict)

    def run(self, held: HeldOut, task: Task, backbone: str, strategy: str) -> RunScore:
        """Train one strategy on one seed's split, score ``task`` on test, record it."""
        cfg = _run_config(self.cfg, backbone, strategy, held.seed)
        pretrained = cfg.backbone.pretrained and strategy != TFIDF
        if strategy == TFIDF:
            backbone = TFIDF  # no backbone: one run per seed, named by what it reads
            t0 = time.perf_counter()
            scored = _tfidf(held, task)
            seconds = time.perf_counter() - t0
        elif strategy == "probe":
            if backbone not in self.embeddings:
                self.embeddings[backbone] = _embed(held.manifest, cfg, self.progress)
            emb = self.embeddings[backbone]
            t0 = time.perf_counter()
            scored = _probe(held, cfg, emb, task)
            # a probe on its own embeds the images once: its cost includes that
            seconds = time.perf_counter() - t0 + emb.seconds
        else:
            slug = backbone.replace(":", "_").replace("/", "_")
            run_dir = self.out / "runs" / f"{slug}-{strategy}-seed{held.seed}"
            t0 = time.perf_counter()
            scored = _finetune(held, cfg, run_dir, self.progress, task)
            seconds = time.perf_counter() - t0
        main, macro_f1, predicted, seen = _score(task, scored)
        self.truth.setdefault(held.seed, {}).update(seen)
        score = RunScore(
            backbone, strategy, held.seed, pretrained, main, macro_f1, seconds,
            len(seen), held.scored, main_metric(task),
        )  # fmt: skip
        key = (backbone, strategy, held.seed)
        self.runs[key], self.predictions[key] = score, predicted
        self.result.runs.append(score)
        # rewritten after every run, so a crash keeps what was measured
        csv_text = results_csv(self.result.runs, self.result.metric)
        atomic_write_text(self.out / "results.csv", csv_text)
        return score

    def finish(self, several_backbones: bool) -> StrategyComparison:
        """Summaries, contrasts and the written files."""
        result = self.result
        result.rows = summarise_rows(result.runs, label_backbone=several_backbones)
        best = best_row(result.rows)
        result.contrasts = [
            contrast(best, other, self.runs, self.predictions, self.truth)
            for other in result.rows
            if other is not best
        ]
        result.embeddings = {
            b: {"seconds": round(e.seconds, 3), "computed": e.computed, "cached": e.cached}
            for b, e in self.embeddings.items()
        }
        write_comparison(result)
        return result


def compare_strategies(
    data: str | Path,
    output: str | Path,
    *,
    config: FitConfig | None = None,
    task: str | None = None,
    strategies: Sequence[str] | None = None,
    backbones: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    overwrite: bool = False,
    progress: bool = True,
    on_run: Callable[[RunScore], None] | None = None,
) -> StrategyComparison:
    """Train every (backbone, strategy) on every seed's split of ``data``, score each on the
    held-out test split on ``task`` (default: the first), and write the comparison to
    ``output`` (see the module docstring).  ``strategies`` default to the data's
    (:data:`IMAGE_STRATEGIES` or :data:`TEXT_STRATEGIES`), ``backbones`` to the config's (a
    text encoder for text data); ``on_run`` is called after each run."""
    cfg = config or load_config()
    seeds = list(dict.fromkeys(seeds))
    given = list(dict.fromkeys(strategies)) if strategies is not None else None
    if given is not None:  # a typo fails before the data is scanned
        _check_names(given)
    if not seeds:
        raise ConfigError("compare-strategies needs at least one seed (--seeds 1 or more)")
    t0 = time.perf_counter()
    first = held_out(data, cfg, seeds[0])
    text = first.manifest.modality == "text"
    cfg = for_data(cfg, first.manifest)  # text data: a text encoder unless one is named
    chosen_strategies = given or list(TEXT_STRATEGIES if text else IMAGE_STRATEGIES)
    backbones = list(dict.fromkeys(backbones or [cfg.backbone.name]))
    _check_choices(chosen_strategies, backbones, seeds, cfg)
    _check_modality(chosen_strategies, text, first.manifest.task(task))
    out = Path(output)
    _check_output(out, overwrite)
    if any(s not in ("probe", TFIDF) for s in chosen_strategies):
        # imported before any run's clock starts: no run must pay for importing Lightning
        importlib.import_module("headstart.finetune.run")
    session = _Session(cfg, out, progress, StrategyComparison(Path(data), out, cfg))
    for seed in seeds:
        held = first if seed == seeds[0] else held_out(data, cfg, seed)
        chosen = held.manifest.task(task)  # an unknown task fails before any training
        held.manifest.write_csv(out / "splits" / f"seed{seed}.csv")
        session.result.scored[seed] = held.scored
        session.result.task, session.result.metric = chosen.name, main_metric(chosen)
        for backbone in backbones:
            for strategy in chosen_strategies:
                if strategy == TFIDF and backbone != backbones[0]:
                    continue  # it reads no backbone: once per seed
                score = session.run(held, chosen, backbone, strategy)
                if on_run is not None:
                    on_run(score)
    session.result.seconds = time.perf_counter() - t0
    return session.finish(len(backbones) > 1)
