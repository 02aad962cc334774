"""How fast each backbone runs on this machine: images per second through the network (the
extraction engine on a batch of preprocessed images, after a warm-up), measured on demand by
``headstart backbones --speed`` and remembered per CPU, thread count, weights and engine in
the cache root (a verified entry), so a later listing shows it without measuring again."""

from __future__ import annotations

import json
import time

import numpy as np

from headstart.backbones import BackboneRef
from headstart.cache import CacheRoot
from headstart.features import feature_runner
from headstart.features.extract import resolve_engine
from headstart.fsutil import read_entry, write_entry

__all__ = ["measure", "remembered"]

_FILE = "throughput.json"
#: Images per timed batch, and the least time measured (seconds).
BATCH, SECONDS = 16, 2.0


def _machine() -> str:
    # lazy: torch is what knows the CPU's vector extensions (and is loaded to run anyway)
    import torch

    return f"{torch.backends.cpu.get_cpu_capability()}/{torch.get_num_threads()}"


def _key(ref: BackboneRef, engine: str) -> str:
    int8 = f"/int8:{ref.int8_sha256}" if ref.int8_sha256 else ""  # an int8 copy runs differently
    return f"{ref.weights_sha256}/{engine}{int8}"


def _load(cache: CacheRoot) -> dict[str, dict[str, float]]:
    data = read_entry(cache.path / _FILE)
    if data is None:
        return {}
    try:
        doc = json.loads(data)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def remembered(refs: list[BackboneRef], cache: CacheRoot, engine: str = "auto") -> dict[str, float]:
    """The images/s measured earlier on this machine, by backbone name (absent: never)."""
    engine = resolve_engine(engine)
    known = _load(cache).get(_machine(), {})
    return {r.name: float(known[_key(r, engine)]) for r in refs if _key(r, engine) in known}


def measure(ref: BackboneRef, cache: CacheRoot, engine: str = "auto") -> float:
    """Images per second of ``ref``'s network here (see the module docstring), remembered."""
    engine = resolve_engine(engine)
    runner = feature_runner(ref, cache.store, engine)
    size = ref.preprocessing.crop
    batch = np.random.default_rng(0).standard_normal((BATCH, 3, size, size)).astype(np.float32)
    runner(batch)  # warm-up: session start, thread pools, first allocations
    done, start = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - start < SECONDS:
        runner(batch)
        done += BATCH
    rate = done / (time.perf_counter() - start)
    doc = _load(cache)
    doc.setdefault(_machine(), {})[_key(ref, engine)] = rate
    cache.path.mkdir(parents=True, exist_ok=True)
    write_entry(cache.path / _FILE, json.dumps(doc, indent=1).encode())
    return rate
