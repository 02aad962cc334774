"""Pickle-free export / import of fitted heads (every kind, and the composite heads: multi-label,
bagging and ensemble heads record their sub-heads' meta in their own and the sub-heads' arrays
under ``<index>/`` prefixes, an ensemble's stacker under ``meta/``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from headstart import errors
from headstart.heads._base import Head, classes_from_json, classes_to_json, ensure_fitted
from headstart.heads.bagging import BaggedHead
from headstart.heads.ensemble import EnsembleHead
from headstart.heads.kinds import HEADS, check_param_names, head_class
from headstart.heads.multilabel import MultiLabelHead

__all__ = [
    "ENSEMBLE",
    "HEAD_FORMAT_VERSION",
    "MULTILABEL",
    "export_head",
    "import_head",
    "params_json",
]

#: Version of the layout written by :func:`export_head`; bumped on incompatible changes.
HEAD_FORMAT_VERSION = 1
#: The ``kind`` recorded for a :class:`MultiLabelHead` (its labels' heads are recorded inside).
MULTILABEL = "multilabel"
#: The ``kind`` recorded for an :class:`EnsembleHead` (built from fitted members, so it is not
#: one of :data:`HEADS`).
ENSEMBLE = EnsembleHead.kind
#: Prefix of an ensemble's stacker arrays.
_META = "meta/"


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
    if isinstance(head, BaggedHead):
        return _export_bagged(head)
    if isinstance(head, EnsembleHead):
        return _export_ensemble(head)
    kinds = {cls: name for name, cls in HEADS.items()}
    if type(head) not in kinds:
        raise errors.ConfigError(
            f"cannot export {type(head).__name__}; exportable heads: "
            f"{', '.join(sorted([*HEADS, ENSEMBLE, MULTILABEL]))}"
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


def _meta(head: Any, kind: str, params: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": HEAD_FORMAT_VERSION,
        "kind": kind,
        "params": params,
        "classes": classes_to_json(head.classes_),
        "n_features_in": int(head.n_features_in_),
        "state": state,
    }


def _export_subs(
    heads: Sequence[Any], prefixes: Sequence[str]
) -> tuple[dict[str, NDArray[Any]], list[dict[str, Any]]]:
    """Sub-heads' arrays under their prefixes, and their metas."""
    arrays: dict[str, NDArray[Any]] = {}
    metas = []
    for sub, prefix in zip(heads, prefixes, strict=True):
        sub_arrays, sub_meta = export_head(sub)
        arrays.update({f"{prefix}{k}": v for k, v in sub_arrays.items()})
        metas.append(sub_meta)
    return arrays, metas


def _import_sub(arrays: Mapping[str, NDArray[Any]], prefix: str, meta: Any) -> Any:
    if not isinstance(meta, Mapping):
        raise errors.BundleError(f"sub-head meta under {prefix!r} is not an object: {meta!r}")
    own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    return import_head(own, meta)


def _export_multilabel(head: MultiLabelHead) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    ensure_fitted(head)
    subs = head.estimators_
    arrays, metas = _export_subs(subs, [f"{j}/" for j in range(len(subs))])
    state = {
        "thresholds": [float(t) for t in head.thresholds_],
        "one_d": bool(head.one_d_),
        "label_heads": metas,
    }
    return arrays, _meta(head, MULTILABEL, params_json(head), state)


def _export_bagged(head: BaggedHead) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    ensure_fitted(head)
    subs = head.estimators_
    arrays, metas = _export_subs(subs, [f"{i}/" for i in range(len(subs))])
    state = {"estimators": metas, "base_params": _to_json(dict(head.base_params_))}
    return arrays, _meta(head, BaggedHead.kind, params_json(head), state)


def _restore_bagged(
    head: BaggedHead, arrays: Mapping[str, NDArray[Any]], meta: Mapping[str, Any]
) -> None:
    state = meta.get("state") or {}
    subs = state.get("estimators")
    if not isinstance(subs, list) or not subs:
        raise errors.BundleError("bagging head meta needs one or more 'estimators'")
    head.estimators_ = [_import_sub(arrays, f"{i}/", m) for i, m in enumerate(subs)]
    head.base_params_ = _params_from_json(state.get("base_params")) or {}
    head.samples_ = []  # the replicas' rows are not part of the exported state


def _export_ensemble(head: EnsembleHead) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    ensure_fitted(head)
    subs = head.members_
    arrays, metas = _export_subs(subs, [f"{i}/" for i in range(len(subs))])
    meta_meta = None
    if head.meta_ is not None:
        meta_arrays, (meta_meta,) = _export_subs([head.meta_], [_META])
        arrays.update(meta_arrays)
    # the members travel in the state; the constructor's copy of them is not JSON
    params = {k: _to_json(v) for k, v in head.get_params(deep=False).items() if k != "members"}
    state = {
        "slices": head.slices_.tolist(),
        "weights": [float(w) for w in head.weights_],
        "members": metas,
        "meta": meta_meta,
    }
    return arrays, _meta(head, ENSEMBLE, params, state)


def _import_ensemble(arrays: Mapping[str, NDArray[Any]], meta: Mapping[str, Any]) -> Any:
    state = meta.get("state") or {}
    subs, slices, weights = state.get("members"), state.get("slices"), state.get("weights")
    if not (
        isinstance(subs, list)
        and isinstance(slices, list)
        and isinstance(weights, list)
        and 0 < len(subs) == len(slices) == len(weights)
    ):
        raise errors.BundleError("ensemble head meta needs members, slices and weights alike")
    head = EnsembleHead(**_params_for(EnsembleHead, meta))
    members = [
        (int(a), int(b), _import_sub(arrays, f"{i}/", m))
        for i, ((a, b), m) in enumerate(zip(slices, subs, strict=True))
    ]
    stacker = None if state.get("meta") is None else _import_sub(arrays, _META, state["meta"])
    head.members = members
    head.classes_ = classes_from_json(meta.get("classes"))
    head.n_features_in_ = _n_features(meta)
    try:
        head.restore_members(members, weights, stacker)
    except errors.ConfigError as exc:
        raise errors.BundleError(f"ensemble head meta is inconsistent: {exc}") from None
    return head


def import_head(arrays: Mapping[str, NDArray[Any]], meta: Mapping[str, Any]) -> Any:
    """Rebuild a fitted head from :func:`export_head` output, without pickle.

    Raises :class:`~headstart.errors.BundleError` when the meta or arrays are incomplete.
    """
    version = meta.get("format")
    if version != HEAD_FORMAT_VERSION:
        raise errors.BundleError(
            f"unsupported head format {version!r}; this headstart reads {HEAD_FORMAT_VERSION}"
        )
    kind = meta.get("kind")
    if kind == MULTILABEL:
        return _import_multilabel(arrays, meta)
    if kind == ENSEMBLE:
        return _import_ensemble(arrays, meta)
    try:
        cls = head_class(kind)
    except errors.ConfigError as exc:
        raise errors.BundleError(str(exc)) from None
    head = cls(**_params_for(cls, meta))
    head.classes_ = classes_from_json(meta.get("classes"))
    head.n_features_in_ = _n_features(meta)
    if isinstance(head, BaggedHead):
        _restore_bagged(head, arrays, meta)
    else:
        head.restore_state(arrays, meta.get("state") or {})
    return head


def _params_for(cls: type[Head], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments in ``meta`` with their Python types back, checked."""
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
    return params


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
    head.estimators_ = [_import_sub(arrays, f"{j}/", m) for j, m in enumerate(subs)]
    head.one_d_ = bool(state.get("one_d", False))
    head.classes_ = head.estimators_[0].classes_ if head.one_d_ else np.arange(len(subs))
    head.thresholds_ = thresholds
    head.n_features_in_ = _n_features(meta)
    return head


def _params_from_json(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get(_MAPPING), list):
        return {_from_json_key(k): v for k, v in value[_MAPPING]}
    return value
