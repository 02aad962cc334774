"""``calibrate``: fit a temperature for a saved model and store it in the bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from headstart.data.labelled import labelled_split
from headstart.errors import DataError
from headstart.model import load
from headstart.stats.calibration import expected_calibration_error
from headstart.stats.temperature import (
    CalibrationResult,
    apply_temperature,
    fit_temperature,
    negative_log_likelihood,
)

__all__ = ["calibrate_bundle"]


def calibrate_bundle(
    bundle: str | Path, data: str | Path, *, split: str = "val", progress: bool = False
) -> tuple[CalibrationResult, np.ndarray, np.ndarray]:
    """Fit ``T`` for the model at ``bundle`` on the labelled images of ``data`` (its ``split``
    when it has split folders, else all of it) and rewrite the bundle with it, atomically.
    Returns the result, the uncalibrated probabilities and the labels (column indices)."""
    model = load(bundle)
    model.require_plain("calibrate")
    _, use, samples = labelled_split(data, model.classes, split, whole_if_unsplit=True)
    features, failures = model.embed([s.path for s in samples])
    keep = [i for i in range(len(samples)) if i not in failures]
    if not keep:
        raise DataError(f"no readable image in {data} ({use}) to calibrate on")
    proba = model.uncalibrated_proba(features[keep])
    y = np.array([model.classes.index(samples[i].label) for i in keep], dtype=np.intp)
    t = fit_temperature(proba, y)
    after = apply_temperature(proba, t)
    result = CalibrationResult(
        temperature=t,
        n=len(keep),
        nll_before=negative_log_likelihood(proba, y),
        nll_after=negative_log_likelihood(after, y),
        ece_before=expected_calibration_error(proba, y),
        ece_after=expected_calibration_error(after, y),
        data=str(data),
        split=use,
    )
    model.set_calibration(result.to_dict())
    model.save(Path(bundle))
    return result, proba, y
