"""The run report: one self-contained HTML page (data, metrics, errors, embeddings, model card)."""

from __future__ import annotations

from headstart.report.build import build_report
from headstart.report.run import RunFiles, read_run

__all__ = ["RunFiles", "build_report", "read_run"]
