"""Know your data: a 2-D map, clusters, outliers, label issues, near-duplicates and class
overlap, from the cached embeddings (``headstart explore``).

>>> from headstart.explore import explore
>>> exploration = explore("photos/", "explore-out")   # labelled tree/CSV or unlabelled folder
"""

from __future__ import annotations

from headstart.explore.analysis import ClassOverlap, Exploration, NearDuplicatePair, analyse
from headstart.explore.export import export_folders
from headstart.explore.labels import LabelIssues, label_issues
from headstart.explore.run import explore
from headstart.features.neighbours import knn

__all__ = [
    "ClassOverlap",
    "Exploration",
    "LabelIssues",
    "NearDuplicatePair",
    "analyse",
    "explore",
    "export_folders",
    "knn",
    "label_issues",
]
