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
from conftest import FIXTURES
from headstart.cli.main import main
from headstart.demo import demo_data_dir

pytestmark = pytest.mark.usefixtures("cache_dir")
HEAVY = ("numpy", "scipy", "sklearn", "torch", "matplotlib", "onnxruntime", "PIL", "lightning")


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
    old = str(FIXTURES / "bundle_v1")  # written before bundles had an OOD scorer
    argv = ["evaluate", old, str(data), "--ood-data", str(data)]
    _one_line_error(capsys, argv, "has no out-of-distribution scorer")


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
    assert float(table[0]["ood_score"]) >= 0 and table[0]["ood"] in ("true", "false")
    assert (
        main(["evaluate", str(run / "model"), str(data), "-q", "-o", str(tmp_path / "m.json")]) == 0
    )
    assert json.loads((tmp_path / "m.json").read_text())["tasks"]["label"]["n"] == 40
    capsys.readouterr()
    # other demo classes as the foreign images: how well the OOD score tells them apart
    foreign = tmp_path / "foreign"
    shutil.copytree(demo_data_dir() / "test" / "dress", foreign / "dress")
    argv = ["evaluate", str(run / "model"), str(data), "-q", "--ood-data", str(foreign)]
    assert main([*argv, "-o", str(tmp_path / "ood.json")]) == 0
    out = capsys.readouterr().out
    assert "Out-of-distribution" in out and "AUROC" in out and "FPR at 95% TPR" in out
    record = json.loads((tmp_path / "ood.json").read_text())["ood"]
    assert record["n_in"] == 40 and record["n_out"] == len(list(foreign.rglob("*.jpg")))
    assert 0.5 < record["auroc"]["value"] <= 1.0
    assert main(["predict", str(run / "model"), str(foreign)]) == 0
    assert "ood score" in capsys.readouterr().out


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


def _commands() -> list[str]:
    from typer.main import get_command

    from headstart.cli.main import app

    return sorted(get_command(app).commands)  # type: ignore[attr-defined]


def test_help_imports_none_of_the_heavy_libraries() -> None:
    """``headstart --help`` and ``headstart COMMAND --help`` for every command start without
    numpy, scipy, scikit-learn, torch, matplotlib or onnxruntime (checked in a fresh process)."""
    commands = _commands()
    assert {"fit", "predict", "serve", "export", "cv", "compare-strategies"} <= set(commands)
    script = (
        "import sys\n"
        "from headstart.cli.main import main\n"
        f"for argv in [['--help'], *[[c, '--help'] for c in {commands!r}]]:\n"
        "    assert main(argv) == 0, argv\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]


def test_import_headstart_is_lazy() -> None:
    script = (
        "import sys, headstart\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "headstart.Task\n"
        "print(headstart.load.__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == ["[]", "headstart.model"]


def test_two_task_model_predicts_as_csv_and_json(
    two_task_run: object, composites: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = str(two_task_run.bundle_dir)  # type: ignore[attr-defined]
    photo = str(sorted((composites.parent / "test").glob("*.jpg"))[0])
    assert main(["predict", bundle, photo, "-f", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "path,left,left:top,items,items:top,ood_score,ood,error"
    assert main(["predict", bundle, photo, "-f", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert set(row["tasks"]) == {"left", "items"} and row["top"] == row["tasks"]["left"]["top"]
    assert main(["predict", bundle, photo]) == 0
    table = capsys.readouterr().out
    assert "left" in table and "items" in table
    assert main(["evaluate", bundle, str(composites), "-q"]) == 0
    out = capsys.readouterr().out
    assert "task left" in out and "task items" in out and "mAP" in out
