"""Seeded, stratified train/val/test assignment that copes with tiny classes.

Each stratum (a class, or a label combination for multi-label rows) is split on its own, with a
random stream derived from ``(seed, stratum)``: the split is exactly stratified, reproducible, and
adding images to one class never reshuffles another.  Files with identical bytes move as one unit,
so a duplicate cannot leak from train into val or test.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

from headstart.errors import ConfigError

__all__ = [
    "SPLIT_ALIASES",
    "check_fractions",
    "normalise_split",
    "strata",
    "stratified_assign",
]

# Folder names / CSV cells accepted for each split, mapped to the manifest's names.
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def strata(cells: Sequence[Sequence[str]]) -> list[str]:
    """What splits and folds are stratified on, one entry per row of label ``cells``: the label
    when every row has exactly one, else each row's rarest label (ties by name; "" for a row
    without labels), since whole label sets are mostly unique and would all stay in train."""
    if all(len(cell) == 1 for cell in cells):
        return [cell[0] for cell in cells]
    counts = Counter(label for cell in cells for label in cell)
    return [min(cell, key=lambda c: (counts[c], c)) if cell else "" for cell in cells]


def normalise_split(name: str) -> str | None:
    """The manifest's split name for a folder name or CSV cell, or None if it is not one."""
    return SPLIT_ALIASES.get(name.strip().lower())


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise :class:`ConfigError` unless both fractions are in [0, 1) and leave room for train."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction must be below 1 to leave images for training, "
            f"got {val_fraction} + {test_fraction}"
        )


def stratified_assign(
    strata: Sequence[str],
    units: Sequence[Hashable],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> list[str]:
    """Assign "train"/"val"/"test" to each item, stratified by ``strata[i]``.

    Items sharing a unit (e.g. the same content hash) within a stratum get the same split.  Every
    stratum keeps at least one unit in train; a stratum of two units gives one to val (if asked),
    one of three or more also gives one to test (if asked).  ``units`` must be given in a stable
    order (the caller sorts by path) for the result to be reproducible.
    """
    check_fractions(val_fraction, test_fraction)
    members: dict[str, dict[Hashable, list[int]]] = defaultdict(dict)
    for index, (stratum, unit) in enumerate(zip(strata, units, strict=True)):
        members[stratum].setdefault(unit, []).append(index)
    result = ["train"] * len(strata)
    for stratum in sorted(members):
        groups = list(members[stratum].values())
        order = _rng(seed, stratum).permutation(len(groups))
        n_val, n_test = _counts(len(groups), val_fraction, test_fraction)
        for rank, position in enumerate(order):
            # test takes the first units: carving val (for fine-tuning) never changes the test set
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            for index in groups[position]:
                result[index] = split
    return result


def _counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of ``n`` units go to val and test; train always keeps at least one."""
    n_val = round(n * val_fraction)
    n_test = round(n * test_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    if test_fraction > 0 and n >= 3:
        n_test = max(n_test, 1)
    while n_val + n_test > n - 1 and (n_val or n_test):
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def _rng(seed: int, stratum: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x00{stratum}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))
