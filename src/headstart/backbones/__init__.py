"""Pretrained backbones: registry, offline-first weights and the preprocessing that goes with them.

Importing this package does not import torch; :class:`Backbone` and :func:`save_weights` are
loaded from :mod:`headstart.backbones.model` on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import (
    BackboneRef,
    BackboneSpec,
    BackboneStatus,
    fuse,
    get_spec,
    list_backbones,
    require_single,
    resolve_backbone,
)
from headstart.backbones.spec import TextSpec
from headstart.backbones.text import TEXT_BUILTINS, is_text_name, resolve_text_backbone

if TYPE_CHECKING:
    from headstart.backbones.model import Backbone, save_weights

__all__ = [
    "TEXT_BUILTINS",
    "Backbone",
    "BackboneRef",
    "BackboneSpec",
    "BackboneStatus",
    "Preprocessing",
    "TextSpec",
    "fuse",
    "get_spec",
    "is_text_name",
    "list_backbones",
    "require_single",
    "resolve_backbone",
    "resolve_text_backbone",
    "save_weights",
]

_LAZY = {"Backbone", "save_weights"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        # PEP 562: torch is imported only when one of these names is used
        from headstart.backbones import model

        return getattr(model, name)
    raise AttributeError(f"module 'headstart.backbones' has no attribute '{name}'")
