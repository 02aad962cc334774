"""``--strategy finetune | auto`` and ``--resume RUN``.

``auto``: the probe (cached embeddings + logistic head) costs seconds, fine-tuning minutes, so
the probe runs first.  Fine-tuning is tried unless the probe's validation accuracy already
reaches ``strategy.auto_skip_above`` (default 0.98): little is left to gain, and what is left is
within the noise of a few hundred validation images.  The probe's accuracy is also the measure
of how far the data is from ImageNet that matters here: photos the pretrained features already
separate score high, distant domains (sign-language hands, medical scans) score low, and those
are where fine-tuning pays.  When both ran, the better validation accuracy wins (ties keep the
probe: same inference cost, fewer moving parts); ``finetune.json`` says what was chosen and why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from headstart.config import FitConfig, load_config
from headstart.errors import ConfigError
from headstart.finetune.run import (
    RESUME_FILE,
    finetune,
    start_record,
    write_outcome,
)
from headstart.fsutil import atomic_write_text
from headstart.pipeline import FitResult

__all__ = ["STRATEGIES", "fit_with_strategy", "resume_run"]

STRATEGIES = ("probe", "finetune", "auto")


def _val_accuracy(result: FitResult) -> float:
    """Validation accuracy; for multi-label / multi-task runs the mean over tasks of accuracy
    (multi-class) and mAP (multi-label)."""
    if result.task_metrics:
        per_task = result.task_metrics.get("val", {})
        scores = [
            m.mean_ap.value if hasattr(m, "mean_ap") else m.accuracy.value
            for m in per_task.values()
        ]
        return float(sum(scores) / len(scores)) if scores else float("nan")
    metrics = result.metrics.get("val")
    return float(metrics.accuracy.value) if metrics is not None else float("nan")


def _auto(
    data: str | Path,
    cfg: FitConfig,
    run_dir: Path,
    *,
    overwrite: bool,
    progress: bool,
    resume: bool,
) -> FitResult:
    from headstart.pipeline import fit

    probe_cfg = cfg.model_copy(
        update={"strategy": cfg.strategy.model_copy(update={"kind": "probe"})}
    )
    probe = fit(
        data,
        run_dir,
        config=probe_cfg,
        overwrite=overwrite or resume,
        progress=progress,
        report=False,
    )
    probe_acc = _val_accuracy(probe)
    decision: dict[str, Any] = {"strategy": "auto", "probe_val_accuracy": probe_acc}
    if probe_acc >= cfg.strategy.auto_skip_above:
        decision.update(
            chosen="probe",
            reason=(
                f"probe val accuracy {probe_acc:.3f} >= strategy.auto_skip_above "
                f"{cfg.strategy.auto_skip_above:g}: fine-tuning skipped"
            ),
        )
        _write_decision(run_dir, decision)
        return probe
    if not resume:
        start_record(data, cfg, run_dir, "auto")
    outcome = finetune(probe.manifest, cfg, run_dir, progress=progress, resume=resume, write=False)
    tuned_acc = _val_accuracy(outcome.result)
    decision["finetune_val_accuracy"] = tuned_acc
    if tuned_acc > probe_acc:
        decision.update(
            chosen="finetune",
            reason=(f"fine-tune val accuracy {tuned_acc:.3f} > probe {probe_acc:.3f}"),
        )
        write_outcome(outcome, {**decision, "strategy": "auto"})
        return outcome.result
    decision.update(
        chosen="probe", reason=(f"probe val accuracy {probe_acc:.3f} >= fine-tune {tuned_acc:.3f}")
    )
    _write_decision(run_dir, {**outcome.facts, **decision})
    return probe


def _write_decision(run_dir: Path, decision: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "finetune.json", json.dumps(decision, indent=2) + "\n")
    record = run_dir / RESUME_FILE
    if record.is_file():
        current = json.loads(record.read_text(encoding="utf-8"))
        current["finished"] = True
        atomic_write_text(record, json.dumps(current, indent=2) + "\n")


def fit_with_strategy(
    data: str | Path,
    output: str | Path,
    config: FitConfig,
    strategy: str,
    *,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
) -> FitResult:
    """Fit with ``strategy`` ``finetune`` or ``auto`` (``probe`` is :func:`headstart.fit`)."""
    run_dir = Path(output)
    cfg = config.model_copy(
        update={"strategy": config.strategy.model_copy(update={"kind": strategy})}
    )
    if strategy == "finetune":
        outcome = finetune(
            data, cfg, run_dir, overwrite=overwrite, progress=progress, resume=resume
        )
        return outcome.result
    if strategy == "auto":
        return _auto(data, cfg, run_dir, overwrite=overwrite, progress=progress, resume=resume)
    raise ConfigError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")


def resume_run(run_dir: str | Path, *, progress: bool = True) -> FitResult:
    """Continue the killed fine-tune in ``run_dir`` from its last checkpoint, with the data,
    strategy and resolved config it started with."""
    run_dir = Path(run_dir)
    record_path = run_dir / RESUME_FILE
    if not record_path.is_file():
        raise ConfigError(
            f"{run_dir} is not a resumable run (no {RESUME_FILE}); only fine-tuning runs resume"
        )
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if record.get("finished"):
        raise ConfigError(f"{run_dir} finished already; its model is in {run_dir / 'model'}")
    cfg = load_config(run_dir / "config.yaml")
    return fit_with_strategy(
        record["data"], run_dir, cfg, record["strategy"], progress=progress, resume=True
    )
