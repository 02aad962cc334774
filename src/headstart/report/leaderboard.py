"""The report's leaderboard: what a preset tried and what each step bought on validation, and
an ensemble's members beside it with paired tests (from ``RUN/ensemble.json``)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from headstart.report.run import RunFiles
from headstart.report.template import Section, note, pct, table

__all__ = ["leaderboard_section"]


def _read(run: RunFiles) -> dict[str, Any] | None:
    path = run.run_dir / "ensemble.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _steps(record: dict[str, Any]) -> list[str]:
    rows = []
    for step in record.get("steps", []):
        if not isinstance(step, dict):
            continue
        if "skipped" in step:
            rows.append([str(step.get("step")), "skipped", "", str(step["skipped"])])
        else:
            cv, seconds = float(step.get("cv", float("nan"))), float(step.get("seconds", 0.0))
            rows.append([str(step.get("step")), pct(cv), f"{seconds:.1f}", ""])
    limit = float(record.get("time_limit_s", 0.0))
    return [
        f"<p>Preset <b>{escape(str(record.get('preset')))}</b> with a time limit of "
        f"{limit / 60:.1f} min kept <b>{escape(str(record.get('chosen')))}</b>, the best "
        "validation score (out-of-fold predictions of the training images; the held-out "
        "split was not looked at).</p>",
        table(["step", "validation", "seconds", "note"], rows, numeric=(1, 2)),
    ]


def _members(record: dict[str, Any]) -> list[str]:
    board = record.get("members") or []
    if not board:
        return []
    tasks = list(board[0].get("tasks", {}))
    out = [f"<h3>Members beside the ensemble ({escape(str(record.get('method')))})</h3>"]
    for task in tasks:
        if len(tasks) > 1:
            out.append(f"<h4>{escape(task)}</h4>")
        splits = sorted({k for m in board for k in m["tasks"][task] if k not in _NOT_SPLITS})
        rows = []
        for m in board:
            entry = m["tasks"][task]
            cells: list[object] = [m.get("name", "?"), m.get("backbone", "")]
            cells += [pct(entry[s]) if s in entry else "" for s in splits]
            cells.append(f"{entry['weight']:.2f}" if "weight" in entry else "")
            versus = entry.get("vs_ensemble")
            if versus:
                low, high = versus["ci"]
                cells.append(
                    f"{100 * versus['diff']:+.1f} pts [{100 * low:+.1f}, {100 * high:+.1f}], "
                    f"McNemar p={versus['p_value']:.3g}: {versus['verdict']}"
                )
            else:
                cells.append("")
            rows.append(cells)
        header = ["model", "backbone", *splits, "weight", "ensemble minus member (paired)"]
        out.append(table(header, rows, numeric=range(2, 3 + len(splits))))
    return out


_NOT_SPLITS = {"weight", "vs_ensemble"}


def leaderboard_section(run: RunFiles) -> Section | None:
    """The leaderboard section, or None for a run that is neither an ensemble nor a preset."""
    record = _read(run)
    if record is None:
        return None
    parts = []
    if "steps" in record:
        parts += _steps(record)
    parts += _members(record)
    if not parts:
        parts.append(note("ensemble.json lists nothing to show."))
    return Section("leaderboard", "3b. Leaderboard", "\n".join(parts))
