"""``fit --preset``: a time budget spent on backbones, their fusion and ensembles, the best on
validation kept, every step and skip recorded; bad flags are one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from headstart.cli.main import main
from headstart.config import load_config
from headstart.errors import ConfigError
from headstart.pipeline.presets import fit_preset, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("20m", 1200.0), ("1.5h", 5400.0)]
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-5m", "soon", "0", "nan"])
def test_bad_durations_are_one_line(text: str) -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration(text)


def test_bad_preset_flags_are_one_line(tiny_data: Path, tmp_path: Path, capsys: Any) -> None:
    base = ["fit", str(tiny_data), "-o", str(tmp_path / "r"), "-q"]
    cases = {
        "unknown preset": [*base, "--preset", "fastest"],
        "add --preset": [*base, "--time-limit", "5m"],
        "chooses the backbones": [*base, "--preset", "best", "-b", "mobilenet_v2"],
        "not a duration": [*base, "--preset", "best", "--time-limit", "soon"],
    }
    for needle, argv in cases.items():
        assert main(argv) == 2, needle
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (needle, err)
    assert not (tmp_path / "r" / "model").exists()


@pytest.mark.slow
def test_balanced_keeps_the_best_candidate_on_validation(
    tiny_data: Path, shared_cache: Path, tmp_path: Path
) -> None:
    cfg = load_config(overrides=[f"extract.cache_dir={shared_cache}", "eval.n_boot=100"])
    lines: list[str] = []
    result = fit_preset(
        tiny_data, tmp_path / "run", "balanced", config=cfg, progress=False, report=True,
        say=lines.append,
    )  # fmt: skip
    record = json.loads((tmp_path / "run" / "ensemble.json").read_text())
    steps = {s["step"]: s for s in record["steps"]}
    assert {"probe mobilenet_v2", "probe efficientnet_lite1"} <= set(steps)
    assert "probe mobilenet_v2+efficientnet_lite1" in steps
    scored = [s["cv"] for s in record["steps"] if "cv" in s]
    chosen = record["chosen"]
    best = max(scored)
    kept = steps.get(chosen if chosen.startswith("ensemble") else f"probe {chosen}")
    assert kept is not None and kept["cv"] == best
    assert all("left]" in line for line in lines) and lines
    assert "test" in result.metrics
    assert "Leaderboard" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.slow
def test_the_time_limit_skips_what_would_overrun(
    tiny_data: Path, shared_cache: Path, tmp_path: Path
) -> None:
    # a fresh cache: every backbone would have to embed, and one second buys only the first
    cfg = load_config(overrides=[f"extract.cache_dir={tmp_path / 'cold'}", "eval.n_boot=0"])
    fit_preset(tiny_data, tmp_path / "run", "best", time_limit=1.0, config=cfg, progress=False,
               report=False)  # fmt: skip
    record = json.loads((tmp_path / "run" / "ensemble.json").read_text())
    done = [s["step"] for s in record["steps"] if "cv" in s]
    skipped = [s for s in record["steps"] if "skipped" in s]
    assert done == ["probe mobilenet_v2"]
    assert len(skipped) == 3 and all("left" in s["skipped"] for s in skipped)
    assert record["chosen"] == "mobilenet_v2"
    assert (tmp_path / "run" / "model" / "model.json").is_file()


@pytest.mark.slow
def test_a_multi_label_task_keeps_the_best_single_candidate(
    composites: Path, shared_cache: Path, tmp_path: Path
) -> None:
    cfg = load_config(
        overrides=[
            f"extract.cache_dir={shared_cache}",
            "eval.n_boot=0",
            "data.label_column=items",
        ]
    )
    result = fit_preset(
        composites, tmp_path / "run", "balanced", config=cfg, progress=False, report=False
    )
    record = json.loads((tmp_path / "run" / "ensemble.json").read_text())
    skipped = [s for s in record["steps"] if "skipped" in s]
    assert skipped and "multi-label" in skipped[0]["skipped"]
    task = result.tasks[0]
    assert task.multi_label
    head = result.heads[task.name]
    assert head.thresholds_.shape == (len(task.classes),)
    assert result.metrics["test"][task.name].mean_ap.value > 0.5
