"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).

One scalar ``T`` divides the head's log-probabilities before the softmax,
``p_T = softmax(log p / T)``; for a logistic head that is exactly ``softmax(logits / T)``.  It
is fitted on labelled validation data by minimising the negative log-likelihood over
``log T`` (bounded scalar search), so it never changes which class is predicted, only how
confident the prediction is.  A multi-label task gets one ``T`` per label, fitted on the label's
two-column distribution ``[1 - p, p]``: then ``p_T = sigmoid(logit(p) / T)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from headstart.errors import ConfigError, DataError
from headstart.stats.calibration import reliability_bins

__all__ = [
    "Temperature",
    "apply_calibration",
    "apply_label_temperatures",
    "apply_temperature",
    "binary_columns",
    "fit_calibration",
    "fit_label_temperatures",
    "fit_temperature",
    "negative_log_likelihood",
    "read_temperatures",
    "reliability_rows",
    "temperature_entry",
]

#: Search bounds on log T: T in [e^-4, e^4] covers every real head we have seen by far.
_LOG_T_BOUNDS = (-4.0, 4.0)
_EPS = 1e-12


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), _EPS, None))


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(proba) / T)`` row-wise; ``T = 1`` returns the probabilities unchanged."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
    if temperature == 1.0:
        return np.asarray(proba, dtype=np.float64)
    z = _log(proba) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


#: A task's stored temperature: one for a multi-class task, one per label for a multi-label one.
Temperature = float | list[float]


def apply_calibration(proba: np.ndarray, temperature: Temperature | None) -> np.ndarray:
    """``proba`` with a task's stored temperature applied (as given when there is none)."""
    if temperature is None:
        return proba
    if isinstance(temperature, list):
        return apply_label_temperatures(proba, np.asarray(temperature, dtype=np.float64))
    return apply_temperature(proba, temperature)


def temperature_entry(temperature: Temperature) -> dict[str, Temperature]:
    """A task's entry in a calibration record: ``{"temperature": T}`` or, for a multi-label
    task, ``{"temperatures": [T per label]}`` (:func:`read_temperatures` reads it back)."""
    key = "temperatures" if isinstance(temperature, list) else "temperature"
    return {key: temperature}


def read_temperatures(tasks: Mapping[str, Any]) -> dict[str, Temperature]:
    """Each task's temperature from a calibration record's ``tasks`` entries
    (``{"temperature": T}`` or ``{"temperatures": [T, ...]}``); a malformed entry raises
    KeyError, TypeError, ValueError or AttributeError for the caller to name."""
    out: dict[str, Temperature] = {}
    for name, entry in tasks.items():
        if "temperatures" in entry:
            out[str(name)] = [float(t) for t in entry["temperatures"]]
        else:
            out[str(name)] = float(entry["temperature"])
    return out


def binary_columns(p: np.ndarray) -> np.ndarray:
    """A label's probabilities ``p`` as the two-column distribution ``[1 - p, p]``."""
    return np.stack([1.0 - p, p], axis=-1)


def apply_label_temperatures(proba: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """Each label's probabilities (column j) sharpened or softened by its ``temperatures[j]``."""
    p = np.asarray(proba, dtype=np.float64)
    out = np.empty_like(p)
    for j, t in enumerate(temperatures):
        out[:, j] = apply_temperature(binary_columns(p[:, j]), float(t))[:, 1]
    return out


def fit_label_temperatures(proba: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """One ``T`` per label (column) of multi-label probabilities against the 0/1 truth ``Y``."""
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(Y, dtype=np.intp)
    return np.array([fit_temperature(binary_columns(p[:, j]), y[:, j]) for j in range(p.shape[1])])


def negative_log_likelihood(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean ``-log p(true class)``; ``y`` holds column indices."""
    p = np.asarray(proba, dtype=np.float64)
    return float(-_log(p[np.arange(len(y)), y]).mean())


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The ``T`` that minimises the NLL of ``apply_temperature(proba, T)`` on labels ``y``."""
    # lazy: scipy.optimize only when a temperature is fitted
    from scipy.optimize import minimize_scalar

    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=np.intp)
    if p.ndim != 2 or len(p) != len(y) or len(y) == 0:
        raise DataError(f"need (N, C) probabilities for N = {len(y)} labels; got {p.shape}")
    logp = _log(p)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z_max = z.max(axis=1)
        lse = z_max + np.log(np.exp(z - z_max[:, None]).sum(axis=1))
        return float((lse - z[rows, y]).mean())

    result = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def reliability_rows(
    proba: np.ndarray, y: np.ndarray, n_bins: int = 10
) -> list[tuple[str, int, float, float]]:
    """(bin, count, mean confidence, accuracy) for the non-empty top-1 confidence bins."""
    bins = reliability_bins(proba, y, n_bins)
    rows = []
    for i in np.flatnonzero(bins.count):
        label = f"{bins.edges[i]:.1f}-{bins.edges[i + 1]:.1f}"
        rows.append((label, int(bins.count[i]), float(bins.confidence[i]), float(bins.accuracy[i])))
    return rows


def fit_calibration(proba: np.ndarray, truth: np.ndarray, multi_label: bool) -> Temperature:
    """A task's temperature fitted on uncalibrated ``proba`` against ``truth``: one (class
    indices) for a multi-class task, one per label (a 0/1 matrix) for a multi-label one."""
    if multi_label:
        return [float(t) for t in fit_label_temperatures(proba, truth)]
    return fit_temperature(proba, truth)
