"""Pick the labelled images of a data folder or CSV that a trained model is checked against."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from headstart.data.manifest import Manifest, Sample
from headstart.data.scan import scan
from headstart.errors import ConfigError, DataError

__all__ = ["labelled_split"]


def labelled_split(
    data: str | Path,
    classes: Sequence[str],
    split: str | None = None,
    *,
    whole_if_unsplit: bool = False,
    label_column: str | Sequence[str] = "label",
) -> tuple[Manifest, str, list[Sample]]:
    """Scan ``data`` without making a split and return (manifest, split used, its samples).

    ``split`` None picks test, else val, else the whole data.  With ``whole_if_unsplit`` a named
    split falls back to the whole data when the folder has no split folders.  Labels outside
    ``classes`` are a one-line :class:`DataError` (checked for single-label data; a multi-task
    model checks each task).  ``label_column``: the CSV column(s) the model was trained on."""
    manifest = scan(data, val_fraction=0.0, test_fraction=0.0, label_column=label_column)
    present = manifest.splits_present()
    if split is None:
        split = next((s for s in ("test", "val") if s in present), "train")
    elif whole_if_unsplit and split not in present and present == ["train"]:
        split = "train"
    if split not in present:
        raise ConfigError(f"split '{split}' not in {data}; present: {', '.join(present)}")
    samples = manifest.split(split)
    if not manifest.is_plain:
        return manifest, split, samples
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise DataError(
            f"labels the model does not know: {', '.join(unknown)}; "
            f"model classes: {', '.join(classes)}"
        )
    return manifest, split, samples
