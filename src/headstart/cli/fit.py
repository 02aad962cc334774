"""``headstart fit DATA -o RUN``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from headstart.cli.options import (
    ADDRESS_HELP,
    ENGINE_HELP,
    LABEL_COLUMN_HELP,
    TEXT_COLUMN_HELP,
    build_config,
)
from headstart.cli.render import console, show_fit, show_manifest, show_metrics
from headstart.errors import ConfigError

if TYPE_CHECKING:
    from headstart.config import FitConfig
    from headstart.result import FitResult


def report_fit(result: FitResult) -> None:
    """Everything ``fit`` prints after the work: data, extraction, metrics, where files went."""
    show_manifest(result.manifest)
    ex = result.extraction
    if ex is not None:
        rate = ex.n_computed / ex.seconds if ex.seconds > 0 and ex.n_computed else 0.0
        noun, unit = (
            ("texts", "texts/s") if result.manifest.modality == "text" else ("images", "img/s")
        )
        where = " on ray" if result.config.extract.executor == "ray" else ""
        console.print(
            f"Backbone {result.config.backbone.name}: {ex.n_computed} {noun} embedded"
            + (f" ({rate:.0f} {unit}, {ex.engine}{where})" if ex.n_computed else "")
            + f", {ex.n_cached} from cache"
        )
        console.print(f"Head: {result.config.head.kind}, trained on {result.trained_on} {noun}")
    show_strategy(result)
    show_semi_supervised(result.semi_supervised)
    _show_ensemble(result)
    last = list(result.metrics)[-1] if result.metrics else None
    for split, per_task in result.metrics.items():
        show_metrics(per_task, f"{split} split", detail=split == last)
    _show_leakage(result)
    show_fit(result.timings, result.bundle_dir, result.run_dir)
    if result.report is not None:
        console.print(f"Report: {result.report}")


def show_strategy(result: FitResult) -> None:
    """The fine-tuning facts of a run (strategy choice, epochs, imbalance), when it has any."""
    facts = result.finetune
    if facts is None:
        return
    if facts.chosen is not None:
        console.print(f"Strategy auto chose {facts.chosen}: {facts.reason}")
    if facts.epochs_run is not None and facts.chosen != "probe":
        remedies = "; ".join(
            f"{name}: {imb.get('remedy')} ({imb.get('reason')})"
            for name, imb in (facts.imbalance or {}).items()
        )
        console.print(
            f"Fine-tuned {facts.epochs_run} epochs (best epoch {facts.best_epoch}, "
            f"{facts.precision}), imbalance remedy {remedies}; "
            f"curve: {result.run_dir / 'logs' / 'metrics.csv'}"
        )


def show_semi_supervised(record: dict[str, Any] | None) -> None:
    """What ``--unlabelled`` did: images used and left out, and per task the method chosen,
    its pseudo-labels and their accuracy on held-out labelled images."""
    if not record:
        return
    left = [
        f"{record.get(key, 0)} {what}"
        for key, what in (
            ("left_out_labelled", "also labelled"),
            ("left_out_unusable", "unusable"),
            ("left_out_repeats", "repeats"),
            ("left_out_unlike", "unlike the training images"),
        )
        if record.get(key)
    ]
    console.print(
        f"Unlabelled: {record['images']} images from {record['source']}"
        + (f" (left out: {', '.join(left)})" if left else ""),
        highlight=False,
    )
    tasks = record.get("tasks", {})
    for name, task in tasks.items():
        where = f" [{name}]" if len(tasks) > 1 else ""
        acc = task.get("pseudo_label_accuracy")
        checked = (
            f"{acc:.1%} right on {task['pseudo_label_checked']} held-out labelled images"
            if acc is not None
            else "accuracy not measured"
        )
        console.print(
            f"Semi-supervised{where}: {task['reason']}; {task['pseudo_labels']} pseudo-labels "
            f"used ({checked})",
            highlight=False,
        )


def _show_leakage(result: FitResult) -> None:
    if result.ranking is not None:
        console.print(f"Backbone auto: chose {result.ranking['chosen']} (see rank-backbones)")
    if result.near_duplicates:
        from headstart.cli.calibrate import show_near_duplicates

        show_near_duplicates(result.near_duplicates, result.manifest)
    if result.deduped:
        console.print(f"--dedupe: removed {result.deduped} image(s) from the evaluation splits")
    if result.config.data.drop_label_issues:
        console.print(
            f"--drop-label-issues: left out {result.label_issues_dropped} training image(s) "
            "whose label the embeddings contradict (problems.csv lists them)"
        )


def _check_preset_flags(preset: str | None, backbone: str | None, strategy: str | None) -> None:
    if preset is None:
        raise ConfigError("--time-limit is the budget of a preset: add --preset balanced|best")
    if preset != "fast" and (backbone is not None or strategy is not None):
        raise ConfigError(
            f"--preset {preset} chooses the backbones and the strategy itself; drop "
            "--backbone/--strategy, or use --preset fast"
        )


def _fit_preset(
    data: Path,
    output: Path,
    preset: str,
    time_limit: str | None,
    cfg: FitConfig,
    overwrite: bool,
    quiet: bool,
) -> FitResult:
    from headstart.pipeline.presets import fit_preset, parse_duration  # the library

    limit = parse_duration(time_limit) if time_limit is not None else None
    return fit_preset(
        data,
        output,
        preset,
        time_limit=limit,
        config=cfg,
        overwrite=overwrite,
        progress=not quiet,
        say=None if quiet else lambda line: console.print(line, highlight=False),
    )


def _show_ensemble(result: FitResult) -> None:
    record = result.ensemble
    if not record:
        return
    if "preset" in record:
        search = result.timings.get("search", 0.0)
        console.print(
            f"Preset {record['preset']}: kept {record['chosen']} "
            f"(time limit {record['time_limit_s']:.0f} s, search {search:.0f} s)"
        )
        for step in record.get("steps", []):
            if "skipped" in step:
                console.print(f"  {step['step']}: skipped ({step['skipped']})")
            else:
                console.print(
                    f"  {step['step']}: validation {step['cv']:.3f} in {step['seconds']:.1f} s"
                )


def command(
    data: Path | None = typer.Argument(
        None,
        help="Image folder (class sub-folders) or a CSV (path,label); text: a CSV with "
        "--text-column, or class folders of .txt files.",
    ),
    output: Path = typer.Option(Path("runs/latest"), "-o", "--output", help="Run folder to write."),
    backbone: str | None = typer.Option(
        None, "-b", "--backbone", help="Backbone name (see `headstart backbones`)."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Local weights file for the backbone."
    ),
    head: str | None = typer.Option(
        None, "--head", help="Head: logistic (default), knn, mlp, hgb, lightgbm, bagging."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config value: --set head.kind=knn"
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a model already in the run folder."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    dedupe: bool = typer.Option(
        False, "--dedupe", help="Drop the later copy of cross-split (near-)duplicates."
    ),
    drop_label_issues: bool = typer.Option(
        False,
        "--drop-label-issues",
        help="Leave out training images whose label the embeddings contradict (as explore "
        "flags them; listed in problems.csv).",
    ),
    text_column: str | None = typer.Option(None, "--text-column", help=TEXT_COLUMN_HELP),
    label_column: list[str] = typer.Option([], "--label-column", help=LABEL_COLUMN_HELP),
    no_report: bool = typer.Option(
        False, "--no-report", help="Skip the HTML report (RUN/report.html)."
    ),
    strategy: str | None = typer.Option(
        None,
        "--strategy",
        help="probe (default), finetune, auto, tfidf (text: word and character TF-IDF with a "
        "logistic regression, no encoder), or a Lightning strategy (ddp, ddp_spawn) "
        "to fine-tune with it.",
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the killed fine-tune in this run folder."
    ),
    devices: str | None = typer.Option(None, "--devices", help="Fine-tune devices (e.g. 2)."),
    num_nodes: int | None = typer.Option(None, "--num-nodes", help="Fine-tune machines."),
    precision: str | None = typer.Option(
        None, "--precision", help="Fine-tune precision: 32-true, bf16-mixed, 16-mixed."
    ),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="fast (the default probe), balanced (two backbones, their fusion, ensemble "
        "selection) or best (every offline backbone, fusion, selection and stacking; the best "
        "on validation is kept).",
    ),
    time_limit: str | None = typer.Option(
        None, "--time-limit", help="Budget of --preset, e.g. 20m (balanced 10m, best 20m)."
    ),
    unlabelled: Path | None = typer.Option(
        None,
        "--unlabelled",
        help="Unlabelled images (a folder, or a CSV with a path column) the probe also learns "
        "from: pseudo-labels by self-training or label spreading, chosen by CV (or neither).",
    ),
    engine: str | None = typer.Option(None, "--engine", help=ENGINE_HELP),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
) -> None:
    """Fit a classifier: pretrained backbone → cached embeddings → head → evaluated bundle."""
    from headstart.pipeline import fit  # the library: when it runs
    from headstart.pipeline import resume as resume_fit

    if resume is not None:
        result = resume_fit(resume, progress=not quiet, report=not no_report)
        report_fit(result)
        return
    if data is None:
        raise ConfigError("fit needs DATA (a folder or CSV of images or texts), or --resume RUN")
    extra = _train_overrides(strategy, devices, num_nodes, precision)
    extra += ["data.dedupe=true"] if dedupe else []
    extra += ["data.drop_label_issues=true"] if drop_label_issues else []
    cfg = build_config(
        config,
        set_,
        backbone=backbone,
        weights=weights,
        head=head,
        text_column=text_column,
        label_column=label_column,
        extra=extra,
        engine=engine,
        address=address,
    )
    if unlabelled is not None:  # a path, not YAML to parse
        cfg = cfg.model_copy(
            update={"data": cfg.data.model_copy(update={"unlabelled": unlabelled})}
        )
    if preset is not None or time_limit is not None:
        _check_preset_flags(preset, backbone, strategy)
        result = _fit_preset(data, output, preset or "best", time_limit, cfg, overwrite, quiet)
        report_fit(result)
        return
    result = fit(
        data, output, config=cfg, overwrite=overwrite, progress=not quiet, report=not no_report
    )
    report_fit(result)


_STRATEGIES = ("probe", "finetune", "auto", "tfidf")
_DISTRIBUTED = ("ddp", "ddp_spawn", "ddp_find_unused_parameters_true")


def _train_overrides(
    strategy: str | None, devices: str | None, num_nodes: int | None, precision: str | None
) -> list[str]:
    """--strategy/--devices/--num-nodes/--precision as config overrides."""
    out = []
    if strategy is not None:
        if strategy in _DISTRIBUTED:
            out += ["strategy.kind=finetune", f"train.distributed={strategy}"]
        elif strategy in _STRATEGIES:
            out.append(f"strategy.kind={strategy}")
        else:
            valid = ", ".join(_STRATEGIES + _DISTRIBUTED)
            raise ConfigError(f"unknown --strategy {strategy!r}; valid: {valid}")
    if devices is not None:
        out.append(f"train.devices={devices}")
    if num_nodes is not None:
        out.append(f"train.num_nodes={num_nodes}")
    if precision is not None:
        out.append(f"train.precision={precision}")
    return out


def register(app: typer.Typer) -> None:
    app.command("fit")(command)
