"""Multi-label and multi-task classification: one head per task, each either a multi-class head
(softmax, one label per image) or a :class:`LabelSetHead` (one binary head per label, sigmoid
probabilities, a decision threshold per label tuned on validation).

A data set is multi-task when its CSV names several label columns, and a task is multi-label when
some cell holds several labels (``a|b``); see :func:`headstart.data.scan`.  Plain data (one task,
one label per image) never comes here: it keeps the single-head path and bundle format 1.
"""

from headstart.tasks.heads import (
    LabelSetHead,
    export_task_heads,
    fit_task_head,
    import_task_heads,
    indicator,
    task_proba,
    tune_thresholds,
)
from headstart.tasks.metrics import (
    LabelMetrics,
    MultiLabelMetrics,
    evaluate_task,
    multilabel_metrics,
    task_metrics_from_dict,
)

__all__ = [
    "LabelMetrics",
    "LabelSetHead",
    "MultiLabelMetrics",
    "evaluate_task",
    "export_task_heads",
    "fit_task_head",
    "import_task_heads",
    "indicator",
    "multilabel_metrics",
    "task_metrics_from_dict",
    "task_proba",
    "tune_thresholds",
]
