"""Head registry, factory and pickle-free export / import of fitted heads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import ClassifierMixin

from headstart import errors
from headstart.heads._base import Head, classes_from_json, classes_to_json, ensure_fitted
from headstart.heads.knn import KNNHead
from headstart.heads.logistic import LogisticHead
from headstart.heads.mlp import MLPHead

__all__ = ["HEADS", "HEAD_FORMAT_VERSION", "create_head", "export_head", "import_head"]

#: Every head kind by name; the keys are what ``create_head`` and config files accept.
HEADS: dict[str, type[Head]] = {"logistic": LogisticHead, "knn": KNNHead, "mlp": MLPHead}
#: Version of the layout written by :func:`export_head`; bumped on incompatible changes.
HEAD_FORMAT_VERSION = 1


def _head_class(kind: Any) -> type[Head]:
    if not isinstance(kind, str) or kind not in HEADS:
        raise errors.ConfigError(f"unknown head {kind!r}; known: {', '.join(sorted(HEADS))}")
    return HEADS[kind]


def create_head(kind: str, **params: Any) -> ClassifierMixin:
    """A new, unfitted head of ``kind`` (see :data:`HEADS`) with ``params`` set.

    Raises :class:`~headstart.errors.ConfigError` for an unknown kind or parameter name.
    """
    cls = _head_class(kind)
    _check_param_names(cls, params)
    return cls(**params)


def _check_param_names(cls: type[Head], params: Mapping[str, Any]) -> None:
    valid = sorted(cls._get_param_names())
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise errors.ConfigError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for head {cls.kind!r}; valid: {', '.join(valid)}"
        )


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


def export_head(head: Any) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """A fitted head as plain arrays (for safetensors) plus JSON-able meta.

    The meta holds ``format``, ``kind``, ``params`` (the constructor arguments), ``classes``,
    ``n_features_in`` and ``state`` (the head's fitted non-array values).
    """
    kinds = {cls: name for name, cls in HEADS.items()}
    if type(head) not in kinds:
        raise errors.ConfigError(
            f"cannot export {type(head).__name__}; exportable heads: {', '.join(sorted(HEADS))}"
        )
    ensure_fitted(head)
    meta = {
        "format": HEAD_FORMAT_VERSION,
        "kind": kinds[type(head)],
        "params": {name: _to_json(v) for name, v in head.get_params(deep=False).items()},
        "classes": classes_to_json(head.classes_),
        "n_features_in": int(head.n_features_in_),
        "state": head.export_extra(),
    }
    return head.export_arrays(), meta


def import_head(arrays: Mapping[str, NDArray[Any]], meta: Mapping[str, Any]) -> ClassifierMixin:
    """Rebuild a fitted head from :func:`export_head` output, without pickle.

    Raises :class:`~headstart.errors.BundleError` when the meta or arrays are incomplete.
    """
    version = meta.get("format")
    if version != HEAD_FORMAT_VERSION:
        raise errors.BundleError(
            f"unsupported head format {version!r}; this headstart reads {HEAD_FORMAT_VERSION}"
        )
    try:
        cls = _head_class(meta.get("kind"))
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
        _check_param_names(cls, params)
    except errors.ConfigError as exc:
        raise errors.BundleError(f"head meta has bad params: {exc}") from None
    head = cls(**params)
    head.classes_ = classes_from_json(meta.get("classes"))
    n_features = meta.get("n_features_in")
    if not isinstance(n_features, int) or n_features < 1:
        raise errors.BundleError(
            f"head meta 'n_features_in' must be a positive int; got {n_features!r}"
        )
    head.n_features_in_ = n_features
    head.restore_state(arrays, meta.get("state") or {})
    return head
