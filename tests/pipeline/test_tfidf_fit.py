"""``fit --strategy tfidf``: a real bundle (no network, the TF-IDF head in head.safetensors,
verified on load) that predicts and evaluates texts like any text model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import headstart
from headstart.cli.main import main
from headstart.errors import BundleError, ConfigError
from headstart.evaluation import evaluate_data
from texts import write_text_csv


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tfidf")
    data = write_text_csv(root / "bank.csv")
    args = ["fit", str(data), "--text-column", "text", "--label-column", "category",
            "--strategy", "tfidf", "-o", str(root / "run"), "-q"]  # fmt: skip
    assert main(args) == 0
    return data, root / "run"


def test_the_bundle_holds_the_tfidf_head_and_no_network(run: tuple[Path, Path]) -> None:
    _, run_dir = run
    info = json.loads((run_dir / "model" / "model.json").read_text())
    assert info["backbone"]["name"] == "tfidf" and info["head"]["kind"] == "tfidf"
    assert set(info["files"]) == {"head.safetensors"}
    assert info["calibration"]["method"] == "temperature"
    report = (run_dir / "report.html").read_text()
    assert "TF-IDF of word 1-2-grams" in report and "no map" in report


def test_it_predicts_and_evaluates_texts(run: tuple[Path, Path]) -> None:
    data, run_dir = run
    model = headstart.load(run_dir / "model")
    assert model.modality == "text" and model.ood is None
    answers = model.predict(["my card never arrived", "what rate do you use for euros", " "])
    assert [p.top[0][0] for p in answers[:2]] == ["card_arrival", "exchange_rate"]
    assert answers[2].error == "empty text"
    result = evaluate_data(model, data, split="test", progress=False)
    assert result.metrics["label"].n == 6


def test_a_changed_head_file_is_refused(run: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(run[1] / "model", copy)
    data = bytearray((copy / "head.safetensors").read_bytes())
    data[-3] ^= 1
    (copy / "head.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match its sha256"):
        headstart.load(copy)


def test_images_are_refused_in_one_line(tmp_path: Path) -> None:
    from salt import copy_demo

    data = copy_demo(tmp_path / "img", ("hat", "shoes"), {"train": 4, "test": 2})
    with pytest.raises(ConfigError, match="--strategy tfidf reads texts"):
        headstart.fit(data, tmp_path / "run", strategy="tfidf", progress=False)
