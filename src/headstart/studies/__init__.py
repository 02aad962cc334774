"""Studies on top of the pipeline: cross-validation, tuning, model comparison, calibration of a
saved model, and ``compare-strategies`` (scratch vs probe vs fine-tune over seeds)."""
