"""A rich progress bar for extraction that shows images per second (on stderr)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["ExtractProgress"]


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} img/s", style="progress.data.speed")


class ExtractProgress:
    """``with ExtractProgress(total, name, enabled) as bar: bar.advance(n)``; silent if disabled."""

    def __init__(
        self, total: int, name: str, enabled: bool = True, *, verb: str = "extract"
    ) -> None:
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn(f"[bold]{verb}[/] {{task.description}}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(name, total=total)

    def __enter__(self) -> ExtractProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, n: int) -> None:
        """Count ``n`` more images done."""
        if self._progress is not None:
            self._progress.advance(self._task, n)
