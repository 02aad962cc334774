"""Fine-tuning a text encoder on the image recipe: the encoder module (the probe's embeddings
exactly), length-bucketed batches, the text defaults, the saved encoder folder, multi-task and
kill-and-resume.

Most tests train a tiny random BERT (2 layers, 32 wide) built here with a word-level tokenizer
of the sentences below, so they need transformers and tokenizers but no downloaded model and
take seconds of CPU; the two that need real weights use the ``minilm-l6`` built-in
(all-MiniLM-L6-v2) and skip where it is not installed.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from safetensors.torch import load_file

import headstart
from headstart.backbones import BackboneRef, resolve_backbone
from headstart.cache import CacheRoot
from headstart.config import FitConfig, TrainConfig, load_config
from headstart.data import Task, scan
from headstart.errors import BackboneError, ConfigError, WeightsError
from headstart.finetune import FinetuneModule, backbone_blocks, finetune, param_groups
from headstart.finetune.data import EpochSampler
from headstart.finetune.run import build_parts
from headstart.finetune.text import (
    TEXT_RECIPE,
    TokenizedTexts,
    build_text_encoder,
    text_recipe,
)
from headstart.runfolder import RunFolder
from salt import kill_after_checkpoint

REPO = Path(__file__).resolve().parents[2]

TOPICS = {
    "weather": [
        "It is raining heavily this afternoon.",
        "The forecast says snow tomorrow morning.",
        "A strong wind is blowing from the north.",
        "Sunny skies and warm temperatures all week.",
        "Thunderstorms are expected tonight.",
        "The fog is very thick on the coast today.",
        "It will be cold and cloudy over the weekend.",
        "Heavy rain caused flooding in the valley.",
        "Temperatures will drop below freezing tonight.",
        "There is a chance of showers later today.",
        "The heatwave continues with record highs.",
        "Hail fell briefly during the storm.",
        "Expect light drizzle in the evening.",
        "The sky cleared up after the storm passed.",
    ],
    "food": [
        "This pasta with tomato sauce is delicious.",
        "I baked a chocolate cake for dessert.",
        "The soup needs a little more salt.",
        "We ordered sushi and green tea for dinner.",
        "Fresh bread from the bakery smells wonderful.",
        "She made a salad with avocado and lemon.",
        "The curry was far too spicy for me.",
        "Grill the chicken for ten minutes on each side.",
        "He always eats porridge with honey for breakfast.",
        "The restaurant serves excellent pizza.",
        "Add butter and garlic to the pan.",
        "Strawberries with cream are my favourite snack.",
        "The cheese platter came with grapes and crackers.",
        "Boil the rice until it is soft.",
    ],
    "sports": [
        "The striker scored twice in the second half.",
        "She won the tennis match in three sets.",
        "Our team lost the basketball game last night.",
        "The marathon runners crossed the finish line.",
        "He hit a home run in the ninth inning.",
        "The goalkeeper saved a penalty kick.",
        "The cyclists climbed the mountain stage today.",
        "They train at the swimming pool every morning.",
        "The referee showed a red card to the defender.",
        "The boxer won by knockout in round four.",
        "Our rugby club plays the final on Saturday.",
        "The sprinter set a new world record.",
        "The golf tournament ends on Sunday afternoon.",
        "The coach changed the lineup before kickoff.",
    ],
}
SPLITS = ["train"] * 8 + ["val"] * 3 + ["test"] * 3


def _style(text: str) -> str:
    """A second task: short or long sentence."""
    return "short" if len(text.split()) <= 7 else "long"


@pytest.fixture(scope="module")
def texts_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """texts.csv: text, topic (3 classes), style (2 classes), split (8/3/3 per topic)."""
    path = tmp_path_factory.mktemp("texts") / "texts.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "topic", "style", "split"])
        for topic, sentences in TOPICS.items():
            for text, split in zip(sentences, SPLITS, strict=True):
                writer.writerow([text, topic, _style(text), split])
    return path


def _tokenizer_json(path: Path) -> None:
    """A BERT-style word-level tokenizer of the sentences above: [CLS] words [SEP]."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    words = sorted({w for s in TOPICS.values() for t in s for w in t.lower().rstrip(".").split()})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", ".", *words])}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.save(str(path))


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a random 2-layer BERT (hidden 32): config.json, model.safetensors,
    tokenizer.json, and the sentence-transformers files of a mean-pooled, normalised one."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-encoder")
    _tokenizer_json(folder / "tokenizer.json")
    vocab = len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])
    config = BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 32}')
    kinds = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(kinds)
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    return folder


@pytest.fixture(scope="module")
def minilm() -> BackboneRef:
    """The minilm-l6 built-in (all-MiniLM-L6-v2), skipped where it is not installed."""
    try:
        return resolve_backbone("minilm-l6")
    except (WeightsError, BackboneError) as exc:
        pytest.skip(f"minilm-l6 is not installed here: {exc}")


def _config(encoder: Path | None, *overrides: str) -> FitConfig:
    weights = [f"backbone.weights={encoder}", "backbone.name=minilm-l6"] if encoder else []
    return load_config(
        overrides=[
            "data.text_column=text", "data.label_column=topic", "eval.n_boot=0",
            "train.batch_size=8", "train.accelerator=cpu", *weights, *overrides,
        ]
    )  # fmt: skip


def _test_texts() -> list[str]:
    return [
        t for s in TOPICS.values() for t, split in zip(s, SPLITS, strict=True) if split == "test"
    ]


# -- the module and its data ------------------------------------------------------------------
def test_encoder_embeds_like_the_probe_and_blocks_decay(
    minilm: BackboneRef, tmp_path: Path
) -> None:
    """The trained module computes the probe's embeddings (the text engine's), so the first
    epoch starts where the probe is; its blocks are embeddings + each layer, no pooler."""
    from headstart.features.text_engine import extract_texts

    texts = [*_test_texts(), "a", "Short one.", "x " * 300]  # one truncated at max_length
    expected = extract_texts(
        texts, None, minilm, store=CacheRoot.of(tmp_path).store, engine="torch", progress=False
    ).features
    assert minilm.text is not None
    encoder = build_text_encoder(minilm)
    tokens = TokenizedTexts(texts, minilm.text.folder, minilm.text.max_length)
    assert max(tokens.lengths) == minilm.text.max_length
    with torch.inference_mode():
        got = encoder(tokens.batch(range(len(texts)))).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5)

    blocks = backbone_blocks(encoder)
    assert [b.name for b in blocks] == ["embeddings", *(f"encoder.layer.{i}" for i in range(6))]
    groups = param_groups(
        torch.nn.Linear(384, 3), blocks, lr=1e-3, backbone_lr_ratio=0.05, layer_decay=0.9,
        weight_decay=0.01,
    )  # fmt: skip
    rates = {g["name"].removesuffix(":nd"): g["lr"] for g in groups}
    assert rates["encoder.layer.5"] == pytest.approx(5e-5)
    assert rates["embeddings"] == pytest.approx(5e-5 * 0.9**6)
    FinetuneModule(encoder, [Task("label", ("a", "b"))], TrainConfig())
    assert not any(p.requires_grad for p in encoder.model.pooler.parameters())


def test_dynamic_padding_and_length_buckets(tiny_encoder: Path) -> None:
    texts = [t for s in TOPICS.values() for t in s] * 4
    tokens = TokenizedTexts(texts, tiny_encoder, max_length=6)
    assert max(tokens.lengths) == 6 and min(tokens.lengths) >= 3  # [CLS] ... [SEP], truncated
    batch = tokens.batch([0, 1])
    assert batch.shape[:2] == (2, 2) and batch.dtype == torch.int64
    pair = ["Hail fell.", "The striker scored twice in the second half."]
    short = TokenizedTexts(pair, tiny_encoder, 32)
    assert short.lengths == [5, 11]  # [CLS] words . [SEP]
    padded = short.batch([0, 1])
    assert padded.shape == (2, 2, 11)  # padded to the batch's longest, not to max_length
    assert padded[0, 1].tolist() == [1] * 5 + [0] * 6 and padded[0, 0, 5:].eq(0).all()

    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    sampler = EpochSampler(1000, seed=3, lengths=lengths, batch_size=32)
    sampler.set_epoch(1)
    order = [i for i, _ in sampler]
    assert sorted(order) == list(range(1000))
    assert order == [i for i, _ in sampler]  # depends only on (seed, epoch)
    sampler.set_epoch(2)
    assert order != [i for i, _ in sampler]
    spread = [np.ptp(lengths[order[i : i + 32]]) for i in range(0, 992, 32)]
    assert np.mean(spread) < 5  # random batches of these lengths spread by ~50 tokens
    # one pool here (1000 < 50 batches): the short batch, its 8 longest, comes last
    assert sorted(lengths[order[-8:]]) == sorted(lengths)[-8:]


def test_text_recipe_fills_only_what_the_config_leaves(caplog: pytest.LogCaptureFixture) -> None:
    cfg = text_recipe(load_config(overrides=["train.lr=0.02", "train.epochs=7"]))
    assert cfg.train.lr == 0.02 and cfg.train.epochs == 7
    for key, value in TEXT_RECIPE.items():
        if key not in ("lr", "epochs"):
            assert getattr(cfg.train, key) == value, key
    assert text_recipe(cfg) == cfg  # a written-and-read config keeps its values
    with caplog.at_level(logging.WARNING, logger="headstart"):
        text_recipe(load_config(overrides=["augment.preset=strong"]))
    assert "augment" in caplog.text and "no augmentation" in caplog.text


def test_probe_head_folds_into_the_linear_head() -> None:
    """The head starts as the probe's logistic regression: same probabilities, per task (the
    two-class and multi-label cases included), columns in the task's class order."""
    from headstart.finetune.head_init import probe_rows
    from headstart.heads import LogisticHead

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) * [1.0, 2.0, 0.5, 1.0, 3.0] + 1.0
    labels = np.array(["c", "a", "b"])[np.argmax(x[:, :3] + rng.normal(size=(60, 3)), axis=1)]
    task = Task("t", ("c", "a", "b"))  # not sorted: columns must follow the task
    w, b = probe_rows(task, x, [(y,) for y in labels])
    probe = LogisticHead().fit(x, labels)
    expected = probe.predict_proba(x)[:, [list(probe.classes_).index(c) for c in task.classes]]
    np.testing.assert_allclose(
        torch.softmax(torch.tensor(x @ w.T + b), 1).numpy(), expected, atol=1e-8
    )

    two = Task("two", ("no", "yes"))
    w2, b2 = probe_rows(two, x, [("yes" if v > 1 else "no",) for v in x[:, 0]])
    binary = LogisticHead().fit(x, np.where(x[:, 0] > 1, "yes", "no")).predict_proba(x)
    np.testing.assert_allclose(
        torch.softmax(torch.tensor(x @ w2.T + b2), 1).numpy(), binary, atol=1e-8
    )

    tags = Task("tags", ("p", "q", "always"), multi_label=True)
    cells = [(*(["p"] if v[0] > 1 else []), *(["q"] if v[1] > 1 else []), "always") for v in x]
    w3, b3 = probe_rows(tags, x, cells)
    p = LogisticHead().fit(x, x[:, 0] > 1).predict_proba(x)[:, 1]
    np.testing.assert_allclose(1 / (1 + np.exp(-(x @ w3[0] + b3[0]))), p, atol=1e-8)
    assert not w3[2].any() and b3[2] > 3  # every text has it: a bias only


def test_distillation_and_pruning_refuse_text(texts_csv: Path, tiny_encoder: Path) -> None:
    manifest = scan(texts_csv, label_column="topic", text_column="text")
    ref = resolve_backbone("minilm-l6", tiny_encoder)
    with pytest.raises(ConfigError, match="image backbones"):
        build_parts(manifest, _config(tiny_encoder), start=(ref, object()))  # type: ignore[arg-type]


# -- whole runs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tuned(texts_csv: Path, tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    run = tmp_path_factory.mktemp("runs") / "text"
    cfg = _config(tiny_encoder, "train.epochs=2")
    return finetune(texts_csv, cfg, run, progress=False)


def test_text_finetune_trains_saves_the_encoder_and_predicts(tuned, tiny_encoder: Path) -> None:  # type: ignore[no-untyped-def]
    run = tuned.run_dir
    folder = run / "checkpoints" / "encoder"
    ref = tuned.backbone
    assert ref.text is not None and ref.text.folder == folder and ref.text.max_length == 32
    assert ref.weights_path == folder / "model.safetensors"
    pretrained = resolve_backbone("minilm-l6", tiny_encoder)
    assert ref.weights_sha256 != pretrained.weights_sha256  # never shares a cache entry
    assert ref == resolve_backbone("minilm-l6", folder)  # the folder resolves to this very ref
    before, after = (
        load_file(tiny_encoder / "model.safetensors"),
        load_file(folder / "model.safetensors"),
    )
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("encoder.layer.1.") for k in changed)
    assert any(k.startswith("embeddings.") for k in changed)
    assert not any(k.startswith("pooler.") for k in changed)

    facts = json.loads((run / "finetune.json").read_text())
    assert facts["epochs_run"] == 2 and facts["history"][0]["frozen"] == 0.0
    config = RunFolder(run).read_config()
    assert config.backbone.name == "minilm-l6" and config.train.lr == TEXT_RECIPE["lr"]

    # the saved encoder + the exported heads give the run's test probabilities
    texts = [s.text or "" for s in tuned.manifest.split("test")]
    assert sorted(texts) == sorted(_test_texts())
    encoder = build_text_encoder(ref)
    tokens = TokenizedTexts(texts, folder, ref.text.max_length)
    with torch.inference_mode():
        features = encoder(tokens.batch(range(len(tokens)))).numpy()
    proba = tuned.heads["label"].predict_proba(features)
    np.testing.assert_allclose(proba, tuned.probabilities["test"]["label"], atol=1e-5)

    model = headstart.load(run / "model")
    assert model.modality == "text"
    served, failures = model.predict_proba(texts)
    assert not failures
    np.testing.assert_allclose(served, proba, atol=1e-4)
    answers = model.predict(texts)
    assert len(answers) == 9 and all(a.top for a in answers)


def test_two_task_text_finetune(texts_csv: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_encoder, "data.label_column=[topic,style]", "train.epochs=1")
    cfg = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"task_weights": {"style": 0.5}})}
    )
    result = finetune(texts_csv, cfg, tmp_path / "two", progress=False)
    assert [t.name for t in result.tasks] == ["topic", "style"]
    assert set(result.heads) == {"topic", "style"}
    assert set(result.metrics["test"]) == {"topic", "style"}
    np.testing.assert_allclose(result.probabilities["test"]["style"].sum(axis=1), 1.0, rtol=1e-6)
    model = headstart.load(tmp_path / "two" / "model")
    probas, failures = model.task_proba(_test_texts())
    assert not failures and probas["topic"].shape == (9, 3) and probas["style"].shape == (9, 2)


@pytest.mark.parametrize("strategy", ["finetune", "auto"])
def test_fit_fine_tunes_text_from_the_command_line(
    texts_csv: Path, tiny_encoder: Path, tmp_path: Path, strategy: str
) -> None:
    """``headstart fit --strategy finetune|auto`` on a text CSV: the run folder holds the text
    recipe it trained with (so ``--resume`` reads it), the decision, and a model that loads."""
    from headstart.cli.main import main

    out = tmp_path / strategy
    args = [
        "fit", str(texts_csv), "-o", str(out), "--text-column", "text", "--label-column",
        "topic", "--backbone", "minilm-l6", "--weights", str(tiny_encoder), "--strategy",
        strategy, "--set", "train.epochs=1", "--set", "train.accelerator=cpu", "--set",
        "eval.n_boot=0", "--no-report", "-q",
    ]  # fmt: skip
    assert main(args) == 0
    config = RunFolder(out).read_config()
    assert config.train.lr == TEXT_RECIPE["lr"] and config.train.epochs == 1
    facts = json.loads((out / "finetune.json").read_text())
    assert facts["strategy"] == strategy
    if strategy == "auto":
        assert facts["chosen"] in ("probe", "finetune") and facts["probe_val_score"] is not None
    model = headstart.load(out / "model")
    assert model.modality == "text" and len(model.predict(_test_texts())) == 9


def test_frozen_epochs_train_the_head_alone_then_the_encoder(
    texts_csv: Path, tiny_encoder: Path, tmp_path: Path
) -> None:
    """Freeze, then unfreeze: ``train.frozen_epochs`` trains the head alone for those epochs
    (the encoder's blocks frozen), then the encoder too."""
    cfg = _config(tiny_encoder, "train.epochs=2", "train.frozen_epochs=1")
    finetune(texts_csv, cfg, tmp_path / "frozen", progress=False)
    facts = json.loads((tmp_path / "frozen" / "finetune.json").read_text())
    assert [row["frozen"] for row in facts["history"]] == [1.0, 0.0]
    assert RunFolder(tmp_path / "frozen").read_config().train.frozen_epochs == 1  # kept as set


@pytest.mark.slow
def test_two_process_ddp_fine_tunes_a_text_encoder(
    texts_csv: Path, tiny_encoder: Path, tmp_path: Path
) -> None:
    run = tmp_path / "ddp"
    args = [
        sys.executable, "-m", "headstart.cli.main", "fit", str(texts_csv), "-o", str(run),
        "--text-column", "text", "--label-column", "topic", "--backbone", "minilm-l6",
        "--weights", str(tiny_encoder), "--strategy", "ddp", "--devices", "2",
        "--set", "train.accelerator=cpu", "--set", "train.epochs=2", "--set", "eval.n_boot=0",
        "--no-report", "-q",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    model = headstart.load(run / "model")
    assert model.modality == "text" and len(model.predict(_test_texts())) == 9
    config = json.loads((run / "model" / "model.json").read_text())["config"]
    assert config["train"]["devices"] == 2 and config["train"]["distributed"] == "ddp"


@pytest.mark.slow
def test_text_encoder_from_scratch(minilm: BackboneRef, texts_csv: Path, tmp_path: Path) -> None:
    """``backbone.pretrained: false``: the encoder's architecture, seeded random weights."""
    cfg = _config(None, "train.epochs=1", "backbone.pretrained=false")
    result = finetune(texts_csv, cfg, tmp_path / "scratch", progress=False, write=False)
    assert result.finetune is not None and result.finetune.strategy == "scratch"
    assert result.finetune.pretrained_weights_sha256 is None
    assert minilm.weights_path is not None
    given = load_file(minilm.weights_path)
    assert result.backbone.weights_path is not None
    trained = load_file(result.backbone.weights_path)
    assert not torch.equal(given["encoder.layer.0.attention.self.query.weight"],
                           trained["encoder.layer.0.attention.self.query.weight"])  # fmt: skip


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "logs" / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_text_kill_and_resume_matches_uninterrupted_run(
    texts_csv: Path, tiny_encoder: Path, tmp_path: Path
) -> None:
    """kill -9 after the first checkpoint, then resume: same validation curve and metrics
    (dropout and the batch order are seeded per step and per epoch)."""
    overrides = ["train.epochs=3", "train.dropout=0.3"]
    finetune(texts_csv, _config(tiny_encoder, *overrides), tmp_path / "whole", progress=False)
    killed = tmp_path / "killed"
    child = (
        "import sys; from pathlib import Path; from headstart.config import load_config; "
        "from headstart.finetune import finetune; "
        "finetune(Path(sys.argv[1]), load_config(overrides=sys.argv[3:]), Path(sys.argv[2]), "
        "progress=False)"
    )
    args = [
        "data.text_column=text", "data.label_column=topic", "eval.n_boot=0",
        "train.batch_size=8", "train.accelerator=cpu", f"backbone.weights={tiny_encoder}",
        "backbone.name=minilm-l6",
        *overrides,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    kill_after_checkpoint(
        [sys.executable, "-c", child, str(texts_csv), str(killed), *args], killed, env
    )
    assert not (killed / "model").exists()
    cfg = RunFolder(killed).read_config()
    finetune(texts_csv, cfg, killed, resume=True, progress=False)
    whole, resumed = _history(tmp_path / "whole"), _history(killed)
    assert [r["epoch"] for r in resumed] == ["0", "1", "2"]
    for a, b in zip(whole, resumed, strict=True):
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), abs=1e-6)
        assert a["val_acc"] == b["val_acc"]
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (tmp_path / "whole", killed)]
    assert metrics[0]["val"] == metrics[1]["val"]


@pytest.mark.slow
def test_minilm_finetune_learns_the_topics(
    minilm: BackboneRef, texts_csv: Path, tmp_path: Path
) -> None:
    """With the text defaults, a few steps of the real encoder classify held-out sentences."""
    result = finetune(
        texts_csv, _config(None, "train.epochs=2"), tmp_path / "minilm", progress=False
    )
    assert result.backbone.name == "minilm-l6"
    assert result.metrics["test"]["label"].accuracy.value >= 8 / 9
