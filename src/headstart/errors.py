"""The exceptions headstart raises for problems a user can fix.

Every such error derives from :class:`HeadstartError` and also from the matching builtin, so
``except ValueError`` keeps working for callers who do not know headstart.  The CLI prints the
message of a ``HeadstartError`` as one line and exits 2; anything else is a bug in headstart.
"""

from __future__ import annotations

__all__ = [
    "BackboneError",
    "BundleError",
    "ConfigError",
    "DataError",
    "HeadstartError",
    "ImageError",
    "NotFittedError",
    "PathNotFoundError",
    "WeightsError",
]


class HeadstartError(Exception):
    """Root of every error a user can act on; the message says what was wrong and what is valid."""


class ConfigError(HeadstartError, ValueError):
    """A configuration value (file, ``--set`` override or argument) is invalid."""


class PathNotFoundError(HeadstartError, FileNotFoundError):
    """A path the user gave does not exist."""


class DataError(HeadstartError, ValueError):
    """The data set cannot be used as given (no classes, one class, bad CSV, ...)."""


class ImageError(HeadstartError, ValueError):
    """One image cannot be decoded safely; the message is the reason, short."""


class BackboneError(HeadstartError, LookupError):
    """Unknown backbone name or a backbone that cannot be built here."""


class WeightsError(HeadstartError, RuntimeError):
    """Pretrained weights are missing, unreadable or fail their sha256 check."""


class BundleError(HeadstartError, ValueError):
    """A model bundle is missing, incomplete, damaged or of an unknown format version."""


class NotFittedError(HeadstartError, AttributeError):
    """A model was used before it was fitted."""
