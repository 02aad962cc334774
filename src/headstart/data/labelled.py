"""Pick the labelled images of a data folder or CSV that a trained model is checked against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from headstart.data.manifest import Manifest, Sample, Task
from headstart.data.scan import scan
from headstart.errors import ConfigError, DataError

__all__ = ["check_known_labels", "labelled_split", "sample_inputs"]


def sample_inputs(samples: Sequence[Sample]) -> list[Path] | list[str]:
    """What a model reads for each sample: its text (text data), else its image path."""
    if samples and samples[0].text is not None:
        return [s.text or "" for s in samples]
    return [s.path for s in samples]


def labelled_split(
    data: str | Path,
    tasks: Sequence[Task],
    split: str | None = None,
    *,
    whole_if_unsplit: bool = False,
    label_column: str | Sequence[str] = "label",
    text_column: str | None = None,
) -> tuple[Manifest, str, list[Sample]]:
    """Scan ``data`` without making a split and return (manifest, split used, its samples).

    ``split`` None picks test, else val, else the whole data.  With ``whole_if_unsplit`` a named
    split falls back to the whole data when the folder has no split folders.  The data must have
    the model's ``tasks`` (its label columns, ``label_column``) and no label outside each task's
    classes; otherwise a one-line :class:`DataError` says what differs.  ``text_column``: a
    text model's CSV text column (a folder of ``.txt`` files needs none)."""
    text = text_column if str(data).lower().endswith(".csv") else None
    manifest = scan(
        data, val_fraction=0.0, test_fraction=0.0, label_column=label_column, text_column=text
    )
    present = manifest.splits_present()
    if split is None:
        split = next((s for s in ("test", "val") if s in present), "train")
    elif whole_if_unsplit and split not in present and present == ["train"]:
        split = "train"
    if split not in present:
        raise ConfigError(f"split '{split}' not in {data}; present: {', '.join(present)}")
    names = [t.name for t in tasks]
    if [t.name for t in manifest.targets] != names:
        raise DataError(
            f"the model answers tasks {', '.join(names)}; {data} has "
            f"{', '.join(t.name for t in manifest.targets)} (set data.label_column to the "
            "model's columns)"
        )
    samples = manifest.split(split)
    check_known_labels(tasks, {t.name: [s.labels[t.name] for s in samples] for t in tasks})
    return manifest, split, samples


def check_known_labels(tasks: Sequence[Task], cells: Mapping[str, Sequence[Sequence[str]]]) -> None:
    """A one-line :class:`DataError` naming the labels of ``cells[task]`` outside the task's
    classes (the model could never predict them)."""
    for task in tasks:
        seen = {label for cell in cells[task.name] for label in cell}
        unknown = sorted(seen - set(task.classes))
        if unknown:
            where = "" if len(tasks) == 1 else f" in '{task.name}'"
            raise DataError(
                f"labels the model does not know{where}: {', '.join(unknown)}; "
                f"model classes: {', '.join(task.classes)}"
            )
