"""Tuning with Optuna: a study finishes, resumes after kill -9 keeping its trials, takes two
worker processes (SQLite here, PostgreSQL when HEADSTART_TEST_POSTGRES_URL is set), and the best
trial becomes a bundle that loads and predicts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

import headstart
from headstart.cli.main import main
from headstart.config import load_config
from headstart.errors import ConfigError
from headstart.heads import create_head
from headstart.studies.tune import HEAD_KINDS, head_from_params, tune


@pytest.fixture(scope="module")
def data(tiny_data: Path, shared_cache: Path) -> Iterator[Path]:
    """The session's four demo classes, embedded once into the session cache (the default root
    for the module's tests and the processes they start)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(shared_cache))
        headstart.embed_data(tiny_data, load_config(), progress=False)
        yield tiny_data


def _states(url: str) -> dict[int, tuple[str, float | None]]:
    (summary,) = optuna.get_all_study_summaries(url)
    study = optuna.load_study(study_name=summary.study_name, storage=url)
    return {t.number: (t.state.name, t.value) for t in study.trials}


def _check_bundle(run: Path, data: Path) -> None:
    model = headstart.load(run / "model")
    predictions = model.predict([data / "test" / "hat"])
    assert len(predictions) == 6 and all(p.top for p in predictions)


def test_tiny_study_writes_best_trial_as_bundle(data: Path, tmp_path: Path) -> None:
    result = tune(data, tmp_path / "run", trials=5, progress=False, report=False)
    assert (tmp_path / "run" / "study.db").is_file()
    assert result.n_finished == 5 and result.best_params["head"] in HEAD_KINDS
    assert result.metric == "accuracy" and result.task == "label"
    assert 0.5 <= result.best_score <= 1.0 and 0.5 <= result.default_score <= 1.0
    assert result.verdict.startswith("tuning beat") == result.beat_default
    written = headstart.load(tmp_path / "run" / "model").info["head"]
    expected = result.best_params["head"] if result.beat_default else "logistic"
    assert expected in str(written)
    _check_bundle(tmp_path / "run", data)


def test_every_head_from_params_is_a_valid_head() -> None:
    samples = [
        {"head": "logistic", "C": 0.1, "class_weight": "balanced"},
        {"head": "knn", "n_neighbors": 3, "weights": "uniform"},
        {"head": "mlp", "hidden": 64, "alpha": 0.1, "learning_rate_init": 1e-3},
    ]
    for params in samples:
        kind, head_params = head_from_params(params)
        assert kind == params["head"]
        create_head(kind, **head_params)


@pytest.mark.slow
def test_study_resumes_after_kill_keeping_earlier_trials(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "headstart.cli.main", "tune", str(data), "-n", "40"]
    argv += ["-o", str(run), "-q"]
    proc = subprocess.Popen(argv, env=dict(os.environ), stdout=subprocess.DEVNULL)
    url = f"sqlite:///{run.resolve() / 'study.db'}"
    before: dict[int, tuple[str, float | None]] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            before = _states(url)
        except Exception:  # the file or tables may not exist yet
            continue
        if sum(s == "COMPLETE" for s, _ in before.values()) >= 3:
            break
    proc.kill()
    proc.wait()
    finished_before = {n: v for n, v in before.items() if v[0] in ("COMPLETE", "PRUNED")}
    assert 3 <= len(finished_before) < 40, "the worker finished before it could be killed"
    assert main(["tune", str(data), "-n", "40", "-o", str(run), "-q"]) == 0
    after = _states(url)
    assert sum(s in ("COMPLETE", "PRUNED") for s, _ in after.values()) == 40
    for number, state in finished_before.items():
        assert after[number] == state  # earlier trials kept as they were
    _check_bundle(run, data)


def _two_workers(data: Path, run: Path, storage: str | None) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    result = tune(
        data, run, trials=8, storage=storage, study_name=name, n_jobs=2, progress=False,
        report=False,
    )  # fmt: skip
    # MaxTrialsCallback stops each worker at the count; a race can add one per extra worker.
    assert 8 <= result.n_finished <= 9
    _check_bundle(run, data)


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study(data: Path, tmp_path: Path) -> None:
    _two_workers(data, tmp_path / "run", None)


@pytest.mark.slow
def test_two_worker_processes_share_one_postgres_study(data: Path, tmp_path: Path) -> None:
    url = os.environ.get("HEADSTART_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set HEADSTART_TEST_POSTGRES_URL (postgresql://...) to run; .ci/run does")
    _two_workers(data, tmp_path / "run", url)


def test_bad_arguments_are_one_line_errors(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="trials"):
        tune(data, tmp_path / "r", trials=0, progress=False)
    code = main(["tune", str(data), "-n", "2", "-o", str(tmp_path / "r"), "--storage", "nope://x"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nope://x" in err
