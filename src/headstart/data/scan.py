"""Turn a folder of class sub-folders, or a CSV of paths and labels, into a :class:`Manifest`.

The scan never decodes pixels: each file gets a header probe (:func:`probe_image`) and a sha256 of
its bytes, so a rescan of a few thousand JPEGs takes a fraction of a second.  Unusable files become
:class:`Problem` rows and the scan goes on; mistakes in the data set's *shape* (no classes, one
class, a bad CSV) raise a :class:`~headstart.errors.DataError` naming what to fix.  Folders are
walked by :mod:`headstart.data.walk`, which holds the symlink policy and reports every path it
could not read or chose not to follow; a class folder lost that way is a ``DataError`` too.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from headstart.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    probe_image,
    unsupported_format,
)
from headstart.data.manifest import (
    DEFAULT_TASK,
    LABEL_SEPARATOR,
    SPLITS,
    DuplicateGroup,
    Manifest,
    Problem,
    Sample,
    Task,
)
from headstart.data.splits import check_fractions, normalise_split, stratified_assign
from headstart.data.splits import strata as stratify
from headstart.data.texts import read_text_file, text_digest, text_problem
from headstart.data.walk import UNREADABLE, ClassFolder, check_class_folders, class_folders
from headstart.errors import DataError, PathNotFoundError

__all__ = ["scan"]

# Pictures that decode fine but are not data: a hosting site's "image not found" stand-in.
_PLACEHOLDER_SHA256 = frozenset(
    {"6b4966252973c581b521f804453c6a0649ea6a2ce7e3e5c7deeb7d80623de231"}  # hymenoptera's GIF
)
_PLACEHOLDER_NAME = re.compile(
    r"(?i)^(image|img|photo|picture|file)?[ _-]*"
    r"(not[ _-]*found|not[ _-]*available|unavailable|removed|deleted|placeholder)$"
)
_READ_WORKERS = min(4, os.cpu_count() or 1)
_CHUNK = 32  # files per read task
_READ_AHEAD = 4  # chunks read ahead of the probe


@dataclass(frozen=True)
class _Candidate:
    path: Path
    labels: dict[str, tuple[str, ...]]  # per task; see Manifest.targets
    split: str | None  # None: to be assigned by a random stratified split
    text: str | None = None  # a CSV cell's text (text data from a CSV), stripped


def scan(
    source: str | Path,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    label_column: str | Sequence[str] = "label",
    text_column: str | None = None,
) -> Manifest:
    """Scan a folder (``root/<class>/...``, optionally under ``train/ val/ test/``) or a CSV.

    Split folders (``train``, ``val``/``valid``/``validation``, ``test``) or a CSV ``split`` column
    are honoured; without a val split, a stratified seeded val is carved from train.  Without any
    split, a stratified seeded train/val/test split is made with the given fractions.  See
    :class:`Manifest` for the result; ``manifest.split_source`` says which of these happened.

    A CSV may name several ``label_column``s (multi-task: one task per column) and a cell may hold
    several labels separated by ``|`` (that column is then a multi-label task, whose cells may
    also be empty: an image with none of the labels).

    Text data: a CSV with ``text_column`` (each row's cell is one sample, no ``path`` column
    needed), or class folders of ``.txt`` files (one sample per file; a tree with no image).
    ``manifest.modality`` is then ``"text"`` and each sample carries its ``text``; empty texts
    and undecodable bytes are problems, identical texts are duplicates.
    """
    check_fractions(val_fraction, test_fraction)
    path = Path(source).expanduser()
    try:
        exists = path.exists()
        path = path.resolve()
        is_file = path.is_file()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, on Python < 3.13
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DataError(f"cannot read data path '{source}': {why}") from None
    if not exists:
        raise PathNotFoundError(f"data path '{source}' does not exist")
    folders: list[ClassFolder] = []
    if is_file:
        if path.suffix.lower() != ".csv":
            raise DataError(
                f"'{source}' is a file; expected a folder of class sub-folders or a .csv file"
            )
        columns = [label_column] if isinstance(label_column, str) else list(label_column)
        candidates, multi_label = _csv_candidates(path, columns, text_column)
        base = "csv"
        strays: list[Problem] = []
        root, folder_classes = path.parent, None
        modality = "image" if text_column is None else "text"
    else:
        candidates, strays, folders, modality = _folder_candidates(path)
        folder_classes = sorted({f.name for f in folders})
        root, base, multi_label = path, "folders", ()
    tasks = tuple(candidates[0].labels) if candidates else (DEFAULT_TASK,)
    if modality == "text":
        kept, problems = _inspect_texts(candidates)
    else:
        kept, problems = _inspect(candidates, max_pixels)
    check_class_folders(folders, {c.path for c, _ in kept}, [*strays, *problems], path)
    targets = tuple(
        Task(
            task,
            tuple(_check_classes(task, candidates, kept, problems, folder_classes, path)),
            task in multi_label,
        )
        for task in tasks
    )
    texts = {c.path: c.text for c, _ in kept} if modality == "text" else {}
    samples, split_source = _assign_splits(
        kept, base, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    if texts:
        samples = [replace(s, text=texts[s.path]) for s in samples]
    samples.sort(key=_sample_order)
    return Manifest(
        root=root,
        samples=samples,
        targets=targets,
        problems=sorted([*strays, *problems], key=lambda p: str(p.path)),
        duplicates=_duplicates(samples),
        split_source=split_source,
        source=path,
        modality=modality,
    )


# ---------------------------------------------------------------- folders


def _folder_candidates(
    root: Path,
) -> tuple[list[_Candidate], list[Problem], list[ClassFolder], str]:
    """One candidate per sample file of each class folder, the problems found, the class
    folders and the modality (see :func:`~headstart.data.walk.class_folders`)."""
    folders, problems, modality = class_folders(root)
    candidates = [
        _Candidate(path, {DEFAULT_TASK: (f.name,)}, f.split) for f in folders for path in f.images
    ]
    return candidates, problems, folders, modality


# ---------------------------------------------------------------- CSV


def _csv_candidates(
    csv_path: Path, label_columns: Sequence[str], text_column: str | None = None
) -> tuple[list[_Candidate], tuple[str, ...]]:
    """The rows as candidates, and the tasks that are multi-label (some cell holds several).

    One label column is the task ``"label"`` (whatever the column's name), several are one
    task per column, named after it.  With ``text_column``, each row is a text (its candidate's
    path names the row: ``<file>.csv#<line>``) and undecodable bytes spoil that row only."""
    name = csv_path.name
    if not label_columns or len(set(label_columns)) != len(label_columns):
        raise DataError(f"label columns must be distinct and non-empty; got {list(label_columns)}")
    tasks = [DEFAULT_TASK] if len(label_columns) == 1 else list(label_columns)
    try:
        errors = "strict" if text_column is None else "surrogateescape"
        with csv_path.open(newline="", encoding="utf-8-sig", errors=errors) as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            key = "path" if text_column is None else text_column
            missing = [c for c in (key, *label_columns) if c not in columns]
            if missing:
                raise DataError(
                    f"{name} is missing column(s) {', '.join(repr(c) for c in missing)}; "
                    f"found: {', '.join(repr(c) for c in columns) or 'no header'}"
                )
            reader.fieldnames = columns
            rows = [(reader.line_num, row) for row in reader]
    except OSError as exc:
        raise DataError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"{name} is not UTF-8 text; save it as UTF-8 CSV") from None
    multi = tuple(
        task
        for task, column in zip(tasks, label_columns, strict=True)
        if any(len(_parts(row.get(column))) > 1 for _, row in rows)
    )
    has_split = "split" in columns
    candidates: list[_Candidate] = []
    first_line: dict[Path, int] = {}
    absent: list[str] = []
    for line, row in rows:
        if text_column is not None:
            candidates.append(
                _text_row(csv_path, line, row, text_column, tasks, label_columns, multi)
            )
            continue
        cell = (row.get("path") or "").strip()
        if not cell:
            raise DataError(f"line {line} of {name} has an empty 'path'")
        path = (csv_path.parent / cell).resolve()
        if path in first_line:
            raise DataError(f"'{cell}' appears twice in {name} (lines {first_line[path]}, {line})")
        first_line[path] = line
        labels = {
            task: _labels(row.get(column), name, line, column, cell, task in multi)
            for task, column in zip(tasks, label_columns, strict=True)
        }
        split = _split_cell(row.get("split"), name, line) if has_split else None
        if not _exists(path):
            absent.append(cell)
        candidates.append(_Candidate(path, labels, split))
    if absent:
        examples = ", ".join(repr(a) for a in absent[:3])
        raise DataError(f"{len(absent)} paths in {name} do not exist, e.g. {examples}")
    if not candidates:
        raise DataError(f"{name} has a header but no rows")
    return candidates, multi


def _text_row(
    csv_path: Path,
    line: int,
    row: dict[str, str],
    text_column: str,
    tasks: Sequence[str],
    label_columns: Sequence[str],
    multi: Sequence[str],
) -> _Candidate:
    where = f"{csv_path.name}#{line}"
    labels = {
        task: _labels(row.get(column), csv_path.name, line, column, where, task in multi)
        for task, column in zip(tasks, label_columns, strict=True)
    }
    split = _split_cell(row.get("split"), csv_path.name, line) if "split" in row else None
    text = (row.get(text_column) or "").strip()
    return _Candidate(csv_path.parent / where, labels, split, text)


def _exists(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return True  # there, but not ours to see (permissions): the read reports why


def _parts(cell: str | None) -> set[str]:
    return {p.strip() for p in (cell or "").split(LABEL_SEPARATOR) if p.strip()}


def _labels(
    cell: str | None, name: str, line: int, column: str, path: str, multi_label: bool
) -> tuple[str, ...]:
    labels = tuple(sorted(_parts(cell)))
    if not labels and not multi_label:
        raise DataError(f"line {line} of {name} has an empty '{column}' (path '{path}')")
    return labels


def _split_cell(cell: str | None, name: str, line: int) -> str:
    split = normalise_split(cell or "")
    if split is None:
        raise DataError(
            f"line {line} of {name} has split '{(cell or '').strip()}'; "
            f"valid: train, val (or valid, validation), test"
        )
    return split


# ---------------------------------------------------------------- checks


def _inspect(
    candidates: Sequence[_Candidate], max_pixels: int
) -> tuple[list[tuple[_Candidate, str]], list[Problem]]:
    """Probe and hash every candidate; return (usable candidate, sha256) pairs and problems.

    Each file is read once: worker threads read and hash chunks of files (both release the GIL)
    a few chunks ahead of this thread, which probes the bytes.  Probing stays here because it
    silences a Pillow warning and ``warnings.catch_warnings`` is not thread-safe.  The bounded
    read-ahead caps the bytes held in memory.
    """
    kept: list[tuple[_Candidate, str]] = []
    problems: list[Problem] = []
    chunks = [candidates[i : i + _CHUNK] for i in range(0, len(candidates), _CHUNK)]
    with ThreadPoolExecutor(max_workers=_READ_WORKERS) as pool:
        pending = deque(pool.submit(_read_chunk, chunk) for chunk in chunks[:_READ_AHEAD])
        for index, chunk in enumerate(chunks):
            results = pending.popleft().result()
            if index + _READ_AHEAD < len(chunks):
                pending.append(pool.submit(_read_chunk, chunks[index + _READ_AHEAD]))
            for candidate, (data, digest) in zip(chunk, results, strict=True):
                if isinstance(data, str):
                    reason: str | None = data
                else:  # a CSV may name a .heic: say so, as the folder walk does
                    reason = unsupported_format(candidate.path.name) or probe_image(
                        data, max_pixels
                    )
                if reason is None:
                    reason = _placeholder_reason(candidate.path, digest)
                if reason is None:
                    kept.append((candidate, digest))
                else:
                    problems.append(Problem(candidate.path, reason))
    return kept, problems


def _inspect_texts(
    candidates: Sequence[_Candidate],
) -> tuple[list[tuple[_Candidate, str]], list[Problem]]:
    """Read (``.txt`` files) and check every text candidate; (usable candidate with its text,
    content hash) pairs and problems."""
    kept: list[tuple[_Candidate, str]] = []
    problems: list[Problem] = []
    for candidate in candidates:
        if candidate.text is None:
            text, reason = read_text_file(candidate.path)
        else:
            text, reason = candidate.text, text_problem(candidate.text)
        if reason is None:
            kept.append((replace(candidate, text=text), text_digest(text)))
        else:
            problems.append(Problem(candidate.path, reason))
    return kept, problems


def _read_chunk(chunk: Sequence[_Candidate]) -> list[tuple[bytes | str, str]]:
    return [_read_and_hash(candidate.path) for candidate in chunk]


def _read_and_hash(path: Path) -> tuple[bytes | str, str]:
    """The file's bytes and sha256, or an 'unreadable: ...' reason and an empty digest."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"{UNREADABLE}: {exc.strerror or exc}", ""
    return data, hashlib.sha256(data).hexdigest()


def _placeholder_reason(path: Path, digest: str) -> str | None:
    if digest in _PLACEHOLDER_SHA256 or _PLACEHOLDER_NAME.match(path.stem):
        return "placeholder picture ('image not found'), not a real image"
    return None


def _check_classes(
    task: str,
    candidates: Sequence[_Candidate],
    kept: Sequence[tuple[_Candidate, str]],
    problems: Sequence[Problem],
    folder_classes: list[str] | None,
    where: Path,
) -> list[str]:
    """The sorted class list; raise if a class has no usable image or there are fewer than two."""
    if not candidates:
        raise DataError(
            f"no images found under {where} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}; "
            "or .txt files for text)"
        )
    reasons = {p.path: p.reason for p in problems}
    usable = {label for c, _ in kept for label in c.labels[task]}
    for cls in folder_classes or sorted({label for c in candidates for label in c.labels[task]}):
        if cls in usable:
            continue
        files = [c.path for c in candidates if cls in c.labels[task]]
        if not files:
            raise DataError(f"class folder '{cls}' in {where} holds no images")
        raise DataError(
            f"every image of class '{cls}' is unusable ({len(files)} files, e.g. "
            f"'{files[0].name}': {reasons.get(files[0], 'unusable')}); fix or remove them"
        )
    classes = sorted(usable)
    if len(classes) < 2:
        what = "" if task == DEFAULT_TASK else f" in column '{task}'"
        found = f"only one class '{classes[0]}'" if classes else "no labels"
        raise DataError(f"found {found}{what} in {where}; need at least two")
    return classes


# ---------------------------------------------------------------- splits


def _assign_splits(
    kept: Sequence[tuple[_Candidate, str]],
    base: str,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[list[Sample], str]:
    given = [c.split for c, _ in kept]
    first = [c.labels[next(iter(c.labels))] for c, _ in kept]  # the first task stratifies
    strata = stratify(first)
    hashes = [h for _, h in kept]
    if all(s is None for s in given):
        splits = stratified_assign(
            strata, hashes, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
        source = (
            f"random stratified (val {_pct(val_fraction)}, test {_pct(test_fraction)}, seed {seed})"
        )
    else:
        splits = [str(s) for s in given]
        source = base
        present = set(splits)
        if "train" not in present:
            raise DataError(f"no train split among the {base}; found {', '.join(sorted(present))}")
        if "val" not in present and val_fraction > 0:
            train = [i for i, s in enumerate(splits) if s == "train"]
            carved = stratified_assign(
                [strata[i] for i in train],
                [hashes[i] for i in train],
                val_fraction=val_fraction,
                test_fraction=0.0,
                seed=seed,
            )
            for i, split in zip(train, carved, strict=True):
                splits[i] = split
            source = f"{base} (val carved from train: {_pct(val_fraction)}, seed {seed})"
    samples = [
        Sample(path=c.path, labels=c.labels, split=split, sha256=h)
        for (c, h), split in zip(kept, splits, strict=True)
    ]
    return samples, source


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def _sample_order(sample: Sample) -> tuple[int, str, str]:
    return (
        SPLITS.index(sample.split),
        LABEL_SEPARATOR.join(next(iter(sample.labels.values()))),
        str(sample.path),
    )


def _duplicates(samples: Iterable[Sample]) -> list[DuplicateGroup]:
    by_hash: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_hash[sample.sha256].append(sample)
    groups = []
    for digest, members in sorted(by_hash.items()):
        if len(members) > 1:
            members.sort(key=lambda s: str(s.path))
            groups.append(
                DuplicateGroup(
                    sha256=digest,
                    paths=tuple(s.path for s in members),
                    splits=tuple(s.split for s in members),
                )
            )
    return groups
