"""``compress``: a model and its data in, one bundle per compression method out, every result
(the original included) measured the same way, ``OUT/compress.json`` and ``OUT/report.html``.

OUT holds one folder per result (``int8/``, ``prune-0.3/``, ``distill-mobilenet_v2/``), each a
run folder whose ``model/`` bundle predicts, serves and exports like any other, and
``original/model.onnx``, the original's export (the original bundle itself is only read).
compress.json is rewritten after each result, so a failure midway keeps what was finished.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headstart.backbones import require_single
from headstart.cache import CacheRoot
from headstart.compress.measure import Measured, images_per_s, machine, measure_result
from headstart.compress.methods import Method, parse_methods
from headstart.config import FitConfig
from headstart.errors import ConfigError
from headstart.evaluation import model_split
from headstart.fsutil import atomic_write_text
from headstart.model import Model, load
from headstart.report.compress import compress_page
from headstart.runfolder import RunFolder

__all__ = ["COMPRESS_FILE", "CompressResult", "Record", "compress", "pareto_front"]

COMPRESS_FILE = "compress.json"
REPORT_FILE = "report.html"
_SPLIT = "test"


@dataclass
class Record:
    """One model on the accuracy / speed / size curve (see :mod:`headstart.compress.measure`)."""

    method: str
    metric: str
    accuracy: float
    accuracy_ci: tuple[float, float]
    images_per_s: float | None
    """None until every result is made: the graphs are timed together, at the end."""
    size_bytes: int
    backbone_bytes: int | None
    """The ONNX backbone(s) it embeds with (the graph also holds heads and the OOD bank)."""
    bundle: str
    onnx: str
    seconds: float
    """Time to produce this result (0 for the original)."""
    pareto: bool = False
    """No other result is at least as accurate, as fast and as small, and better in one."""


@dataclass
class CompressResult:
    """What ``compress`` wrote: the records (the original first), OUT, the machine timed on."""

    output: Path
    records: list[Record]
    split: str
    n_images: int
    machine: str
    report: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "n_images": self.n_images,
            "machine": self.machine,
            "timing": "images/s of each exported ONNX graph in onnxruntime, batch 32, best of "
            "3 rounds taken in turns",
            "size": "bytes of each exported ONNX graph (backbone_bytes: of the ONNX backbone "
            "it embeds with)",
            "results": [asdict(r) for r in self.records],
        }


def _dominates(a: Record, b: Record) -> bool:
    if a.images_per_s is None or b.images_per_s is None:
        return False
    at_least = (
        a.accuracy >= b.accuracy
        and a.images_per_s >= b.images_per_s
        and a.size_bytes <= b.size_bytes
    )
    better = (
        a.accuracy > b.accuracy or a.images_per_s > b.images_per_s or a.size_bytes < b.size_bytes
    )
    return at_least and better


def pareto_front(records: Sequence[Record]) -> list[bool]:
    """For each record: True when no other dominates it (higher accuracy, higher images/s and
    smaller size are better)."""
    return [not any(_dominates(o, r) for o in records if o is not r) for r in records]


def _check_inputs(teacher: Model, data: Path, methods: Sequence[Method]) -> None:
    """Everything that can be refused before hours of training: the held-out split, a
    single-network model for pruning."""
    model_split(teacher, data, _SPLIT)
    if any(m.kind == "prune" for m in methods):
        require_single(teacher.backbone_ref, "pruning", "prune one of its parts' models")


def _produce(
    method: Method,
    bundle: Path,
    data: Path,
    run_dir: Path,
    cfg: FitConfig,
    *,
    unlabelled: Path | None,
    progress: bool,
) -> Path:
    """Run one method into ``run_dir``; the bundle it wrote."""
    if method.kind == "int8":
        from headstart.compress.int8 import int8_bundle

        shutil.rmtree(run_dir / "model", ignore_errors=True)  # checked: --overwrite was given
        return int8_bundle(bundle, data, run_dir / "model", cache=CacheRoot.for_config(cfg))
    if method.kind == "prune":
        from headstart.finetune.prune import prune

        assert method.ratio is not None
        result = prune(
            bundle, data, cfg, run_dir, ratio=method.ratio, overwrite=True, progress=progress
        )
        return result.bundle_dir
    from headstart.finetune.distill import distill

    assert method.student is not None
    result = distill(
        bundle,
        data,
        cfg,
        run_dir,
        student=method.student,
        unlabelled=unlabelled,
        overwrite=True,
        progress=progress,
    )
    return result.bundle_dir


def _record(method: str, bundle: Path, measured: Measured, seconds: float) -> Record:
    return Record(
        method,
        measured.metric,
        measured.accuracy,
        measured.ci,
        None,  # timed with the others at the end
        measured.size_bytes,
        measured.backbone_bytes,
        str(bundle),
        str(measured.onnx),
        seconds,
    )


def _write(result: CompressResult) -> None:
    for record, front in zip(result.records, pareto_front(result.records), strict=True):
        record.pareto = front
    path = result.output / COMPRESS_FILE
    atomic_write_text(path, json.dumps(result.to_dict(), indent=2) + "\n")


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output} exists and is not a folder")
    if (output / COMPRESS_FILE).exists() and not overwrite:
        raise ConfigError(
            f"{output} already holds compression results; pass --overwrite to replace them, or "
            "choose another -o"
        )


def compress(
    model: str | Path,
    data: str | Path,
    output: str | Path,
    *,
    methods: str | Sequence[Method] = "int8",
    config: FitConfig | None = None,
    unlabelled: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    n_boot: int = 1000,
    notify: Callable[[str], None] | None = None,
) -> CompressResult:
    """Compress the bundle ``model`` by each of ``methods`` (see
    :func:`~headstart.compress.methods.parse_methods`), training on ``data``'s train split
    (val picks the best epoch) and scoring every result, the original included, on its test
    split.  ``config``: the fine-tuning recipe of pruning's recovery and of distillation
    (``--set train.epochs=...``); ``unlabelled``: more images for distillation's soft
    targets."""
    chosen = parse_methods(methods) if isinstance(methods, str) else list(methods)
    cfg = config or FitConfig()
    bundle, data, output = Path(model), Path(data), Path(output)
    say = notify or (lambda _msg: None)
    _check_output(output, overwrite)
    original = load(bundle, cache=CacheRoot.for_config(cfg))
    if original.modality == "text":
        raise ConfigError(
            f"{bundle} reads texts; compress measures image models only (for a text model: "
            "headstart export --quantize int8, which checks parity)"
        )
    _check_inputs(original, data, chosen)
    run = RunFolder(output)
    with run.lock():
        say(f"measuring the original {bundle} ...")
        measured = measure_result(
            original,
            data,
            output / "original" / "model.onnx",
            split=_SPLIT,
            n_boot=n_boot,
            progress=progress,
            bundle=bundle,
        )
        result = CompressResult(
            output,
            [_record("original", bundle, measured, 0.0)],
            measured.split,
            len(measured.images),
            machine(),
        )
        _write(result)
        images = measured.images
        for method in chosen:
            say(f"{method.name}: compressing ...")
            start = time.perf_counter()
            made = _produce(
                method,
                bundle,
                data,
                output / method.name,
                cfg,
                unlabelled=Path(unlabelled) if unlabelled else None,
                progress=progress,
            )
            seconds = time.perf_counter() - start
            say(f"{method.name}: measuring {made} ...")
            compressed = load(made, cache=CacheRoot.for_config(cfg))
            measured = measure_result(
                compressed,
                data,
                made / "model.onnx",
                split=_SPLIT,
                n_boot=n_boot,
                progress=progress,
                bundle=made,
            )
            result.records.append(_record(method.name, made, measured, seconds))
            _write(result)
        say(f"timing {len(result.records)} ONNX graphs on this machine, taking turns ...")
        onnx = [Path(r.onnx) for r in result.records]
        for record, speed in zip(result.records, images_per_s(onnx, images), strict=True):
            record.images_per_s = speed
        _write(result)
        report = output / REPORT_FILE
        atomic_write_text(report, compress_page(result.to_dict(), str(bundle), str(data)))
        result.report = report
    return result
