"""Pickle-free export / import of fitted heads (every kind, and the multi-label head)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from headstart import errors
from headstart.heads._base import classes_from_json, classes_to_json, ensure_fitted
from headstart.heads.kinds import HEADS, check_param_names, head_class
from headstart.heads.multilabel import MultiLabelHead

__all__ = ["HEAD_FORMAT_VERSION", "MULTILABEL", "export_head", "import_head", "params_json"]

#: Version of the layout written by :func:`export_head`; bumped on incompatible changes.
HEAD_FORMAT_VERSION = 1
#: The ``kind`` recorded for a :class:`MultiLabelHead` (its labels' heads are recorded inside).
MULTILABEL = "multilabel"


#: JSON objects only have string keys, so a mapping parameter (``class_weight``) is stored as
#: ``{_MAPPING: [[key, value], ...]}`` to keep integer class labels intact.
_MAPPING = "__mapping_items__"


def _to_json(value: Any) -> Any:
    """Parameter values as JSON types (tuples and arrays become lists, numpy scalars numbers)."""
    if isinstance(value, Mapping):
        return {_MAPPING: [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    if isinstance(value, tuple | list | np.ndarray):
        return [_to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise errors.ConfigError(f"head parameter value {value!r} cannot be exported to JSON")


def _from_json_key(key: Any) -> Any:
    # A JSON list is not hashable; labels are scalars, so a list can only come from a tuple.
    return tuple(key) if isinstance(key, list) else key


def params_json(head: Any) -> dict[str, Any]:
    """The head's constructor arguments as JSON values."""
    return {name: _to_json(v) for name, v in head.get_params(deep=False).items()}


def export_head(head: Any) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """A fitted head as plain arrays (for safetensors) plus JSON-able meta.

    The meta holds ``format``, ``kind``, ``params`` (the constructor arguments), ``classes``,
    ``n_features_in`` and ``state`` (the head's fitted non-array values).  A
    :class:`MultiLabelHead` records each label's head meta in ``state.label_heads`` and its
    arrays under ``<label index>/``.
    """
    if isinstance(head, MultiLabelHead):
        return _export_multilabel(head)
    kinds = {cls: name for name, cls in HEADS.items()}
    if type(head) not in kinds:
        raise errors.ConfigError(
            f"cannot export {type(head).__name__}; exportable heads: {', '.join(sorted(HEADS))}"
        )
    ensure_fitted(head)
    meta = {
        "format": HEAD_FORMAT_VERSION,
        "kind": kinds[type(head)],
        "params": params_json(head),
        "classes": classes_to_json(head.classes_),
        "n_features_in": int(head.n_features_in_),
        "state": head.export_extra(),
    }
    return head.export_arrays(), meta


def _export_multilabel(head: MultiLabelHead) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    ensure_fitted(head)
    arrays: dict[str, NDArray[Any]] = {}
    metas = []
    for j, sub in enumerate(head.estimators_):
        sub_arrays, sub_meta = export_head(sub)
        arrays.update({f"{j}/{k}": v for k, v in sub_arrays.items()})
        metas.append(sub_meta)
    meta = {
        "format": HEAD_FORMAT_VERSION,
        "kind": MULTILABEL,
        "params": params_json(head),
        "classes": classes_to_json(head.classes_),
        "n_features_in": int(head.n_features_in_),
        "state": {
            "thresholds": [float(t) for t in head.thresholds_],
            "one_d": bool(head.one_d_),
            "label_heads": metas,
        },
    }
    return arrays, meta


def import_head(arrays: Mapping[str, NDArray[Any]], meta: Mapping[str, Any]) -> Any:
    """Rebuild a fitted head from :func:`export_head` output, without pickle.

    Raises :class:`~headstart.errors.BundleError` when the meta or arrays are incomplete.
    """
    version = meta.get("format")
    if version != HEAD_FORMAT_VERSION:
        raise errors.BundleError(
            f"unsupported head format {version!r}; this headstart reads {HEAD_FORMAT_VERSION}"
        )
    if meta.get("kind") == MULTILABEL:
        return _import_multilabel(arrays, meta)
    try:
        cls = head_class(meta.get("kind"))
    except errors.ConfigError as exc:
        raise errors.BundleError(str(exc)) from None
    params = dict(meta.get("params") or {})
    defaults = cls().get_params(deep=False)
    for name, value in params.items():
        # JSON has no tuples; give tuple-valued parameters (layer sizes) their type back.
        if isinstance(defaults.get(name), tuple) and isinstance(value, list):
            params[name] = tuple(value)
        elif isinstance(value, dict) and isinstance(value.get(_MAPPING), list):
            params[name] = {_from_json_key(k): v for k, v in value[_MAPPING]}
    try:
        check_param_names(cls, params)
    except errors.ConfigError as exc:
        raise errors.BundleError(f"head meta has bad params: {exc}") from None
    head = cls(**params)
    head.classes_ = classes_from_json(meta.get("classes"))
    head.n_features_in_ = _n_features(meta)
    head.restore_state(arrays, meta.get("state") or {})
    return head


def _n_features(meta: Mapping[str, Any]) -> int:
    n_features = meta.get("n_features_in")
    if not isinstance(n_features, int) or n_features < 1:
        raise errors.BundleError(
            f"head meta 'n_features_in' must be a positive int; got {n_features!r}"
        )
    return n_features


def _import_multilabel(arrays: Mapping[str, NDArray[Any]], meta: Mapping[str, Any]) -> Any:
    state = meta.get("state") or {}
    subs = state.get("label_heads")
    thresholds = np.asarray(state.get("thresholds", []), dtype=np.float64)
    if not isinstance(subs, list) or not subs or thresholds.shape != (len(subs),):
        raise errors.BundleError("multilabel head meta needs one label head and threshold each")
    params = dict(meta.get("params") or {})
    params["params"] = _params_from_json(params.get("params"))
    try:
        head = MultiLabelHead(**params)
    except TypeError as exc:
        raise errors.BundleError(f"multilabel head meta has bad params: {exc}") from None
    head.estimators_ = [
        import_head({k[len(f"{j}/") :]: v for k, v in arrays.items() if k.startswith(f"{j}/")}, m)
        for j, m in enumerate(subs)
    ]
    head.one_d_ = bool(state.get("one_d", False))
    head.classes_ = head.estimators_[0].classes_ if head.one_d_ else np.arange(len(subs))
    head.thresholds_ = thresholds
    head.n_features_in_ = _n_features(meta)
    return head


def _params_from_json(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get(_MAPPING), list):
        return {_from_json_key(k): v for k, v in value[_MAPPING]}
    return value
