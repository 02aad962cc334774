"""Text embeddings, fast: tokenize with the ``tokenizers`` library, run an ONNX export of the
encoder (pooling and L2 normalisation inside the graph) with ONNX Runtime, cache every vector.

Texts are tokenized once, sorted by length and batched so each batch pads only to its own
longest text; results come back in input order.  The export is made once per model key (torch
and transformers needed then only), checked against the torch model, and cached beside the
image exports; later runs import neither.  A fully cached call reads the store and nothing else.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.backbones.spec import BackboneRef, TextSpec, file_sha256
from headstart.errors import BackboneError, ConfigError, DataError, WeightsError
from headstart.features.extract import Extraction, resolve_engine
from headstart.features.onnx_engine import cached_export, physical_cores
from headstart.features.progress import ExtractProgress
from headstart.features.store import EmbeddingStore, model_key
from headstart.fsutil import FILE_MODE

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TextFeatures", "export_text_onnx", "extract_texts", "text_sha256"]

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "embeddings"
PARITY_TOLERANCE = 1e-4
#: Checked at export: padding, an empty text, a long one (truncated), and non-ASCII.
PARITY_TEXTS = (
    "How do I locate my card?",
    "",
    "The exchange rate I was charged looks wrong; which rate do you use for payments abroad? " * 40,
    "Ich habe meine Karte verloren. Что мне делать?",
)
#: A batch holds at most this many tokens (rows x longest), so long texts come in smaller
#: batches (eager attention is quadratic in length) while short ones fill ``batch_size``.
TOKENS_PER_BATCH = 16_384
#: A batch takes texts at least this fraction of its longest: on banking77 the padding falls
#: from 6.7% (plain sorted batches of 64) to 1.9% of the tokens, 36% to 3.5% on 500 texts.
MIN_FILL = 0.9
ORT_SPINNING = False  # measured: no gain on 2 shared cores; busy-waiting only steals them
Encoder = Callable[[np.ndarray, np.ndarray], np.ndarray]


def text_sha256(text: str) -> str:
    """The key of a text in the embedding store: sha256 of its UTF-8 bytes (lone surrogates
    passed through, as :func:`headstart.data.texts.text_digest` keys them)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _problem(text: object) -> str | None:
    """Why ``text`` cannot be tokenized, or None."""
    if not isinstance(text, str):
        return f"not a text: {type(text).__name__}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "undecodable characters (lone surrogates)"
    return None


def _text_spec(ref: BackboneRef) -> TextSpec:
    if ref.text is None:
        raise BackboneError(
            f"backbone '{ref.name}' is an image backbone; texts need a text encoder "
            "(minilm-l6, mpnet-base, hf:NAME)"
        )
    return ref.text


def _pad_id(spec: TextSpec) -> int:
    """The id padding uses: the model's own (MPNet derives positions from it), else 0."""
    import json

    config = json.loads((spec.folder / "config.json").read_text(encoding="utf-8"))
    pad = config.get("pad_token_id")
    return int(pad) if isinstance(pad, int) else 0


class _Tokens:
    """A ``tokenizers`` tokenizer from tokenizer.json (checked against the spec's digest),
    truncating at the spec's length; padding is per batch (see :meth:`batches`)."""

    def __init__(self, spec: TextSpec) -> None:
        # lazy: a fully cached run never tokenizes
        from tokenizers import Tokenizer

        path = spec.folder / "tokenizer.json"
        if file_sha256(path) != spec.tokenizer_sha256:
            raise WeightsError(f"tokenizer {path} changed since the text encoder was resolved")
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(spec.max_length)
        self.pad_id = _pad_id(spec)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (surrounding spaces dropped, as sentence-transformers does)."""
        encodings = self.tokenizer.encode_batch([t.strip() for t in texts])
        return [e.ids for e in encodings]

    def batches(
        self, ids: Sequence[Sequence[int]], batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(row indices, input ids, attention mask) batches, longest texts first, each padded
        to its own longest text and holding only texts of at least :data:`MIN_FILL` of it."""
        lengths = np.array([len(row) for row in ids])
        order = np.argsort(-lengths, kind="stable")
        start = 0
        while start < len(order):
            longest = int(lengths[order[start]])
            rows = max(1, min(batch_size, TOKENS_PER_BATCH // max(longest, 1)))
            stop = start + 1
            while (
                stop < len(order)
                and stop - start < rows
                and lengths[order[stop]] >= MIN_FILL * longest
            ):
                stop += 1
            chosen = order[start:stop]
            yield (chosen, *self.pad([ids[i] for i in chosen]))
            start = stop

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(input ids, attention mask) of ``rows``, padded to the longest (int64)."""
        longest = max(len(row) for row in rows)
        input_ids = np.full((len(rows), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        for r, row in enumerate(rows):
            input_ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        return input_ids, mask


def _session(model: bytes | str) -> Any:
    # lazy: onnxruntime takes a second to import; a fully cached run never needs it
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = physical_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", str(int(ORT_SPINNING)))
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _parity(module: nn.Module, path: Path, ref: BackboneRef) -> float:
    """Max abs difference between the torch module and the ONNX file on PARITY_TEXTS."""
    import torch

    tokens = _Tokens(_text_spec(ref))
    worst = 0.0
    session = _session(str(path))
    rows = tokens.encode(PARITY_TEXTS)
    # one batch padded to the longest text, then each text alone (no padding at all)
    for ids, mask in [tokens.pad(rows), *(tokens.pad([row]) for row in rows)]:
        with torch.inference_mode():
            expected = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        got = session.run(None, {INPUTS[0]: ids, INPUTS[1]: mask})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_text_onnx(ref: BackboneRef, path: Path) -> Path:
    """Export ``ref``'s encoder with pooling and normalisation to ONNX at ``path``: inputs
    ``input_ids``/``attention_mask`` (N, L) int64 with dynamic N and L, output ``embeddings``
    (N, D) float32.  Checked against the torch model (max abs diff <= 1e-4, else
    ``BackboneError``); written aside and renamed, so only a checked file lands at ``path``.

    Plain ONNX ops, no onnxruntime.transformers fusions (Attention, SkipLayerNormalization,
    BiasGelu): measured on banking77 (AVX2, one thread) they gained nothing, 34.8 vs 33.2 CPU
    seconds, nor on 131-token texts (10.1 vs 9.8), and the plain graph runs on any runtime."""
    # lazy: torch and transformers take seconds to import; only export and engine=torch need them
    import torch

    from headstart.backbones.text_model import load_text_encoder

    module = load_text_encoder(ref, attention="eager")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tokens = _Tokens(_text_spec(ref))
    ids, mask = tokens.pad(tokens.encode(["an example to trace", "short"]))  # padding traced
    axes = {INPUTS[0]: {0: "batch", 1: "sequence"}, INPUTS[1]: {0: "batch", 1: "sequence"}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # exporter deprecation chatter is not the user's
            torch.onnx.export(
                module,
                (torch.from_numpy(ids), torch.from_numpy(mask)),
                str(tmp),
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamic_axes={**axes, OUTPUT: {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        diff = _parity(module, tmp, ref)
        if diff > PARITY_TOLERANCE:
            raise BackboneError(
                f"the ONNX export of text encoder '{ref.name}' differs from the torch model by "
                f"{diff:.2g} (> {PARITY_TOLERANCE}); use extract.engine=torch"
            )
        os.chmod(tmp, FILE_MODE)  # mkstemp made it private; the cache's files are not
        os.replace(tmp, path)
    except OSError as exc:  # a full or read-only disk: name the file being written
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _onnx_encoder(ref: BackboneRef, store: EmbeddingStore) -> Encoder:
    path = store.onnx_path(model_key(ref, "onnx"))
    model = cached_export(path, lambda target: export_text_onnx(ref, target))
    if model is None:  # export_text_onnx returns its path or raises
        raise BackboneError(f"no ONNX export of text encoder '{ref.name}'")
    session = _session(model)

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = session.run(None, {INPUTS[0]: ids, INPUTS[1]: mask})[0]
        return np.asarray(out, dtype=np.float32)

    return run


def _torch_encoder(ref: BackboneRef) -> Encoder:
    # lazy: torch and transformers take seconds to import; only export and engine=torch need them
    import torch

    from headstart.backbones.text_model import load_text_encoder

    torch.set_num_threads(physical_cores())
    module = load_text_encoder(ref, attention="sdpa")

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    return run


class _Part:
    """One text encoder, warm: its tokenizer and its engine (ONNX Runtime or torch)."""

    def __init__(self, ref: BackboneRef, store: EmbeddingStore, engine: str) -> None:
        self.ref = ref
        self.tokens = _Tokens(_text_spec(ref))
        self.run = _onnx_encoder(ref, store) if engine == "onnx" else _torch_encoder(ref)

    def batches(
        self, texts: Sequence[str], batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row indices into ``texts``, their (n, D) embeddings), batch by batch."""
        for rows, ids, mask in self.tokens.batches(self.tokens.encode(texts), batch_size):
            yield rows, self.run(ids, mask)

    def embed(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """(N, D) embeddings of ``texts``, rows in input order."""
        out = np.empty((len(texts), self.ref.feature_dim or 0), dtype=np.float32)
        for rows, vectors in self.batches(texts, batch_size):
            if out.shape[1] != vectors.shape[1]:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out


def _engine(ref: BackboneRef, engine: str) -> str:
    for part in ref.members:
        _text_spec(part)
    return resolve_engine(engine)


class TextFeatures:
    """Texts -> (N, D) embeddings of a text encoder (single or a text fusion), kept warm for
    repeated calls (prediction, serving); nothing is cached per text here."""

    def __init__(
        self, ref: BackboneRef, store: EmbeddingStore, engine: str = "auto", batch_size: int = 64
    ) -> None:
        self.ref = ref
        self.batch_size = batch_size
        engine = _engine(ref, engine)
        self._parts = [_Part(part, store, engine) for part in ref.members]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """The embeddings of ``texts`` (strings), rows in order."""
        bad = next(((i, why) for i, t in enumerate(texts) if (why := _problem(t))), None)
        if bad is not None:
            raise DataError(f"text {bad[0]} cannot be embedded: {bad[1]}")
        columns = [part.embed(texts, self.batch_size) for part in self._parts]
        return columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)


def extract_texts(
    texts: Sequence[str],
    shas: Sequence[str] | None,
    ref: BackboneRef,
    *,
    store: EmbeddingStore,
    batch_size: int = 64,
    progress: bool = True,
    engine: str = "auto",
) -> Extraction:
    """Embeddings of ``texts`` (rows in input order) by text encoder ``ref``, cached in
    ``store`` per (model key, text sha256); only texts missing there are encoded, and a fully
    cached call loads no tokenizer, session or model.  ``shas``: the texts' sha256 (None:
    :func:`text_sha256` of each).  A value that is not a string is a failure (NaN row).  A
    fusion of text encoders gives each part's columns side by side (parts cached apart)."""
    start = time.perf_counter()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    engine = _engine(ref, engine)
    failures = {i: why for i, t in enumerate(texts) if (why := _problem(t)) is not None}
    if shas is None:
        shas = ["" if i in failures else text_sha256(t) for i, t in enumerate(texts)]
    elif len(shas) != len(texts):
        raise ConfigError(f"got {len(shas)} sha256 values for {len(texts)} texts")
    parts = [
        _extract_one(texts, shas, failures, part, store, engine, batch_size, progress)
        for part in ref.members
    ]
    if len(parts) == 1:
        parts[0].seconds = time.perf_counter() - start
        return parts[0]
    return Extraction(
        features=np.concatenate([e.features for e in parts], axis=1),
        failures=dict(sorted(failures.items())),
        n_cached=min(e.n_cached for e in parts),
        n_computed=max(e.n_computed for e in parts),
        seconds=time.perf_counter() - start,
        engine=engine,
        parts=parts,
        keys=tuple(k for e in parts for k in e.keys),
    )


def _extract_one(
    texts: Sequence[str],
    shas: Sequence[str],
    failures: dict[int, str],
    ref: BackboneRef,
    store: EmbeddingStore,
    engine: str,
    batch_size: int,
    progress: bool,
) -> Extraction:
    key = model_key(ref, engine)
    vectors: dict[str, np.ndarray] = {}
    todo: dict[str, str] = {}
    wanted = {sha: i for i, sha in enumerate(shas) if i not in failures}
    for (sha, i), found in zip(wanted.items(), store.get_many(key, list(wanted)), strict=True):
        if found is not None:
            vectors[sha] = found
        else:
            todo[sha] = texts[i]
    n_cached = sum(1 for i, sha in enumerate(shas) if i not in failures and sha in vectors)
    if todo:
        store.write_info(key, _info(ref, engine))
        part = _Part(ref, store, engine)
        shas_todo, texts_todo = list(todo), list(todo.values())
        with (
            ExtractProgress(len(todo), ref.name, progress) as bar,
            store.writer(key) as writer,
        ):
            for rows, embedded in part.batches(texts_todo, batch_size):
                for row, vector in zip(rows, embedded, strict=True):
                    writer.add(shas_todo[row], vector)
                    vectors[shas_todo[row]] = vector
                bar.advance(len(rows))
    dim = next((len(v) for v in vectors.values()), ref.feature_dim or 0)
    features = np.full((len(texts), dim), np.nan, dtype=np.float32)
    for i, sha in enumerate(shas):
        if i not in failures:
            features[i] = vectors[sha]
    return Extraction(
        features=features,
        failures=dict(sorted(failures.items())),
        n_cached=n_cached,
        n_computed=len(todo),
        engine=engine,
        keys=(key,),
    )


def _info(ref: BackboneRef, engine: str) -> dict[str, Any]:
    spec = _text_spec(ref)
    return {
        "backbone": ref.name,
        "weights_sha256": ref.weights_sha256,
        "text": {
            "tokenizer_sha256": spec.tokenizer_sha256,
            "max_length": spec.max_length,
            "pooling": spec.pooling,
            "normalize": spec.normalize,
        },
        "engine": engine,
    }
