"""Hyperparameter search for the head with Optuna, on cached embeddings.

Each trial picks a head kind and its hyperparameters and is scored by stratified k-fold CV of
one task's main score (``task``, default the first: accuracy, or mAP for a multi-label task,
see :mod:`headstart.studies.scoring`) on the *train* split (val and test stay untouched, so the
refitted model's val/test metrics remain honest).  The running mean after each fold is
reported to Optuna so a median pruner stops hopeless trials early.  Studies live in an RDB
storage: by default a SQLite file in the run folder, so rerunning the same command after a kill
continues the study up to the requested number of finished trials; any RDB URL (PostgreSQL)
lets several processes or machines share one study.  The best trial is refitted with
:func:`headstart.pipeline.fit` into a normal run folder; the refit fits *every* task's head
with the chosen kind and parameters (one head configuration per model), so a multi-task
model's other tasks get the settings tuned for this one.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from headstart.config import FitConfig, load_config
from headstart.data import Task
from headstart.embedding import embed_data, scan_data
from headstart.errors import ConfigError, HeadstartError
from headstart.pipeline import fit
from headstart.studies.cv import task_folds
from headstart.studies.scoring import Cells, cv_score, main_metric, metric_title

if TYPE_CHECKING:
    import optuna

    from headstart.result import FitResult

__all__ = ["HEAD_KINDS", "TuneResult", "cv_score", "head_from_params", "suggest_head", "tune"]

#: Head kinds the search chooses among.
HEAD_KINDS: tuple[str, ...] = ("logistic", "knn", "mlp")
#: Finished trial states that count towards ``trials``.
_DONE = ("COMPLETE", "PRUNED")
#: Looser solver settings inside trials only: ranking settings does not need a tight optimum
#: (the logistic head's own C search uses the same tolerance); the refit uses the defaults.
_TRIAL_SPEED: dict[str, dict[str, Any]] = {
    "logistic": {"tol": 1e-3, "max_iter": 100},
    "mlp": {"max_iter": 20, "batch_size": 256, "n_iter_no_change": 3},
    "knn": {},
}


def suggest_head(
    trial: optuna.Trial, kinds: Sequence[str] = HEAD_KINDS
) -> tuple[str, dict[str, Any]]:
    """Sample a head kind and its parameters (ranges suit standardised embeddings)."""
    kind = str(trial.suggest_categorical("head", list(kinds)))
    if kind == "logistic":
        trial.suggest_float("C", 1e-4, 10.0, log=True)
        trial.suggest_categorical("class_weight", ["none", "balanced"])
    elif kind == "knn":
        trial.suggest_int("n_neighbors", 1, 50, log=True)
        trial.suggest_categorical("weights", ["uniform", "distance"])
    else:
        trial.suggest_int("hidden", 32, 256, log=True)
        trial.suggest_float("alpha", 1e-3, 30.0, log=True)
        trial.suggest_float("learning_rate_init", 1e-4, 1e-2, log=True)
    return head_from_params(trial.params)


def head_from_params(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The head kind and constructor parameters of a trial's (or best trial's) params."""
    kind = str(params["head"])
    if kind == "logistic":
        weight = params.get("class_weight", "none")
        return kind, {
            "Cs": [float(params["C"])],
            "class_weight": None if weight == "none" else weight,
        }
    if kind == "knn":
        return kind, {"n_neighbors": int(params["n_neighbors"]), "weights": params["weights"]}
    return kind, {
        "hidden_layer_sizes": [int(params["hidden"])],
        "alpha": float(params["alpha"]),
        "learning_rate_init": float(params["learning_rate_init"]),
    }


@dataclass
class TuneResult:
    """The study, its best trial against the default head, and the refitted run."""

    study_name: str
    storage: str
    n_finished: int
    best_params: dict[str, Any]
    best_score: float
    """The best trial's CV main score (``metric``)."""
    default_score: float
    default_kind: str
    beat_default: bool
    folds: int
    seconds: float
    search_seconds: float
    """Wall time of this call's trials (workers included), without embedding and refit."""
    fit: FitResult
    task: str = ""
    """The task whose score was tuned."""
    metric: str = "accuracy"
    """The score key: ``accuracy`` or ``mean_ap`` (a multi-label task)."""

    @property
    def verdict(self) -> str:
        """One line: did tuning beat the default head in the same folds?"""
        diff = 100 * (self.best_score - self.default_score)
        name = metric_title(self.metric)
        if self.beat_default:
            return (
                f"tuning beat the default {self.default_kind} head: CV {name} "
                f"{100 * self.best_score:.1f}% vs {100 * self.default_score:.1f}% "
                f"({diff:+.1f} points, same {self.folds} folds; the best of many trials is "
                "optimistic, check val/test)"
            )
        return (
            f"tuning could not beat the default {self.default_kind} head: best CV {name} "
            f"{100 * self.best_score:.1f}% vs default {100 * self.default_score:.1f}% "
            f"(same {self.folds} folds); the default head was refitted"
        )


def _driver_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg
    (3), while headstart's ``postgres`` extra installs psycopg2."""
    scheme, sep, rest = url.partition("://")
    missing_v3 = importlib.util.find_spec("psycopg") is None
    if sep and scheme in ("postgresql", "postgres") and missing_v3:
        return f"postgresql+psycopg2://{rest}" if importlib.util.find_spec("psycopg2") else url
    return url


def _storage(url: str) -> optuna.storages.BaseStorage:
    # lazy: optuna only for tuning
    import optuna

    url = _driver_url(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several processes write one SQLite file: wait for the lock instead of failing.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" but long-standing
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=30, grace_period=120, **kwargs
            )
    except Exception as exc:  # SQLAlchemy's errors vary by driver; all mean a bad URL
        hint = (
            " (for PostgreSQL: pip install 'headstart[postgres]')" if "import" in str(exc) else ""
        )
        message = f"cannot open study storage {url!r}: {exc}".splitlines()[0]
        raise ConfigError(message + hint) from None


def _load_study(url: str, name: str, seed: int, create: bool = False) -> optuna.Study:
    # lazy: optuna only for tuning
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=8, n_warmup_steps=0)
    storage = _storage(url)
    if create:
        return optuna.create_study(
            storage=storage, study_name=name, direction="maximize", sampler=sampler,
            pruner=pruner, load_if_exists=True,
        )  # fmt: skip
    return optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)


def _n_finished(study: optuna.Study) -> int:
    return sum(t.state.name in _DONE for t in study.get_trials(deepcopy=False))


def _splits(
    task: Task, cells: Cells, folds: int
) -> list[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    """The folds every trial (and the default head) is scored on: fixed, seed 0."""
    return [(tr, te) for _, _, tr, te in task_folds(task, cells, folds=folds, seed=0)]


def _worker(
    url: str, name: str, seed: int, trials: int, X: NDArray[Any], task: Task, cells: Cells,
    folds: int,
) -> None:  # fmt: skip
    """One worker: run trials until the study holds ``trials`` finished ones."""
    # lazy: optuna only for tuning
    import optuna

    study = _load_study(url, name, seed)
    splits = _splits(task, cells, folds)

    def objective(trial: optuna.Trial) -> float:
        kind, params = suggest_head(trial)
        return cv_score(task, kind, {**params, **_TRIAL_SPEED[kind]}, X, cells, splits, trial)

    stop = optuna.study.MaxTrialsCallback(
        trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    remaining = trials - _n_finished(study)
    if remaining > 0:
        with threadpool_limits(limits=1):
            study.optimize(objective, n_trials=remaining, callbacks=[stop], catch=(HeadstartError,))


def _run_workers(
    url: str, name: str, seed: int, trials: int, X: NDArray[Any], task: Task, cells: Cells,
    folds: int, n_jobs: int,
) -> None:  # fmt: skip
    if n_jobs == 1:
        _worker(url, name, seed, trials, X, task, cells, folds)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(url, name, seed + 1 + i, trials, X, task, cells, folds))
        for i in range(n_jobs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise ConfigError(f"{len(failed)} of {n_jobs} tuning workers failed (exit {failed})")


def tune(
    data: str | Path,
    output: str | Path,
    config: FitConfig | None = None,
    *,
    task: str | None = None,
    trials: int = 100,
    storage: str | None = None,
    study_name: str | None = None,
    n_jobs: int = 1,
    folds: int = 3,
    seed: int = 0,
    progress: bool = True,
    report: bool = True,
) -> TuneResult:
    """Search heads and hyperparameters by the CV main score of ``task`` (default: the first;
    accuracy, or mAP for a multi-label task) on the train split of ``data``, then refit the
    best (or the default, if no trial beat it) into the run folder ``output`` with
    :func:`headstart.pipeline.fit` (every task's head gets that kind; ``report``: the run's
    HTML report, as ``fit`` writes it).

    ``storage`` defaults to ``sqlite:///OUTPUT/study.db``; the study name defaults to
    ``headstart-<data hash>-<backbone>`` (``-<task>`` added for a task other than the first).
    Rerunning continues the study until it holds ``trials`` finished (complete or pruned)
    trials; ``n_jobs`` > 1 runs worker processes.
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials must be an integer >= 1; got {trials!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ConfigError(f"n_jobs must be an integer >= 1; got {n_jobs!r}")
    cfg = config or load_config()
    t0 = time.perf_counter()
    run_dir = Path(output)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output {run_dir} exists and is not a folder")
    scanned = scan_data(data, cfg)
    scanned.task(task)  # fail fast on an unknown task, before embedding
    embedded = embed_data(scanned, cfg, progress=progress)
    chosen = embedded.manifest.task(task)
    X = embedded.features[embedded.rows("train")]
    cells = embedded.cells(chosen, "train")
    splits = _splits(chosen, cells, folds)  # bad folds fail here, not in every trial
    suffix = "" if chosen == embedded.manifest.targets[0] else f"-{chosen.name}"
    name = study_name or (
        f"headstart-{embedded.manifest.data_hash()[:12]}-{cfg.backbone.name}{suffix}"
    )
    if storage is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(run_dir / 'study.db').resolve()}"
    study = _load_study(storage, name, seed, create=True)
    t_search = time.perf_counter()
    _run_workers(storage, name, seed, trials, X, chosen, cells, folds, n_jobs)
    search_seconds = time.perf_counter() - t_search
    study = _load_study(storage, name, seed)
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        raise ConfigError(f"study {name!r} has no completed trial; see the failed trials' errors")
    best = study.best_trial
    with threadpool_limits(limits=1, user_api="blas"):
        default = cv_score(chosen, cfg.head.kind, dict(cfg.head.params), X, cells, splits)
    beat = float(best.value or 0.0) > default
    kind, params = head_from_params(best.params) if beat else (cfg.head.kind, cfg.head.params)
    refit_cfg = cfg.model_copy(
        update={"head": cfg.head.model_copy(update={"kind": kind, "params": params})}
    )
    result = fit(data, run_dir, config=refit_cfg, overwrite=True, progress=progress, report=report)
    return TuneResult(
        name, storage, _n_finished(study), dict(best.params), float(best.value or 0.0), default,
        cfg.head.kind, beat, folds, time.perf_counter() - t0, search_seconds, result,
        chosen.name, main_metric(chosen),
    )  # fmt: skip
