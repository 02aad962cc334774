"""The command line: a user error is one line on stderr and exit 2; commands say what they did."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import headstart
from headstart.cli.main import main
from headstart.demo import demo_data_dir

pytestmark = pytest.mark.usefixtures("cache_dir")


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("headstart: error:") and needle in err, err
    assert "Traceback" not in err


def _two_classes(tmp_path: Path) -> Path:
    data = tmp_path / "two"
    for cls in ("hat", "shoes"):
        shutil.copytree(demo_data_dir() / "train" / cls, data / cls)
    return data


def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_line_error(capsys, ["fit", str(tmp_path / "nope")], "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(capsys, ["fit", str(empty)], "class")
    one = tmp_path / "one"
    shutil.copytree(demo_data_dir() / "train" / "hat", one / "hat")
    _one_line_error(capsys, ["fit", str(one)], "one class")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,klass\na.jpg,x\n")
    _one_line_error(capsys, ["fit", str(csv_path)], "path")
    csv_path.write_text("path,label\nmissing1.jpg,x\nmissing2.jpg,y\n")
    _one_line_error(capsys, ["fit", str(csv_path)], "missing1.jpg")
    data = _two_classes(tmp_path)
    _one_line_error(capsys, ["fit", str(data), "-b", "resnet1"], "resnet1")
    _one_line_error(capsys, ["fit", str(data), "--set", "head.kind=svm"], "svm")
    _one_line_error(capsys, ["predict", str(tmp_path / "nomodel"), "x.jpg"], "nomodel")


def test_fit_predict_evaluate_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _two_classes(tmp_path)
    run = tmp_path / "run"
    assert main(["fit", str(data), "-o", str(run), "-q", "--set", "data.seed=1"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and str(run / "model") in out
    photo = next((demo_data_dir() / "test" / "shoes").glob("*.jpg"))
    assert main(["predict", str(run / "model"), str(photo), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["top"][0]["label"] == "shoes"
    assert main(["predict", str(run / "model"), str(photo), "-f", "csv", "-k", "2"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert table[0]["label_1"] == "shoes" and float(table[0]["probability_1"]) > 0.5
    assert (
        main(["evaluate", str(run / "model"), str(data), "-q", "-o", str(tmp_path / "m.json")]) == 0
    )
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 40


def test_backbones_lists_the_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v2" in out and "efficientnet_lite0" in out


def test_console_script_runs_in_a_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "headstart.cli.main", "predict", str(tmp_path / "none"), "a.jpg"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_version_is_exposed() -> None:
    assert headstart.__version__
