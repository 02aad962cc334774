"""The head kinds a config names (``head.kind``) and the factory that builds them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from headstart import errors
from headstart.heads._base import Head
from headstart.heads.bagging import BaggedHead
from headstart.heads.boosting import HGBHead, LightGBMHead
from headstart.heads.knn import KNNHead
from headstart.heads.logistic import LogisticHead
from headstart.heads.mlp import MLPHead
from headstart.heads.tfidf import TfidfHead

__all__ = ["HEADS", "check_param_names", "create_head", "head_class"]

#: Every head kind by name; the keys are what ``create_head`` and config files accept.  An
#: :class:`~headstart.heads.EnsembleHead` (kind "ensemble") is not among them: it is built from
#: fitted members (``EnsembleHead.of``) or member specs, not from parameters alone.
HEADS: dict[str, type[Head]] = {
    "logistic": LogisticHead,
    "knn": KNNHead,
    "mlp": MLPHead,
    "hgb": HGBHead,
    "lightgbm": LightGBMHead,
    "bagging": BaggedHead,
    "tfidf": TfidfHead,  # reads texts, not embeddings: --strategy tfidf
}


def head_class(kind: Any) -> type[Head]:
    """The class of head ``kind``; an unknown kind is a :class:`ConfigError` listing them."""
    if not isinstance(kind, str) or kind not in HEADS:
        raise errors.ConfigError(f"unknown head {kind!r}; known: {', '.join(sorted(HEADS))}")
    return HEADS[kind]


def create_head(kind: str, **params: Any) -> Head:
    """A new, unfitted head of ``kind`` (see :data:`HEADS`) with ``params`` set.

    Raises :class:`~headstart.errors.ConfigError` for an unknown kind or parameter name.
    """
    cls = head_class(kind)
    check_param_names(cls, params)
    return cls(**params)


def check_param_names(cls: type[Head], params: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming any of ``params`` that ``cls`` does not take."""
    valid = sorted(cls._get_param_names())
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise errors.ConfigError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for head {cls.kind!r}; valid: {', '.join(valid)}"
        )
