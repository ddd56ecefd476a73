"""Curating a collection: near-duplicate groups with keepers, and outliers.

- ``duplicates``: exact (same content hash) and near (cosine >= threshold) groups, union-find;
- ``keepers``: which copy of a group to keep (pure policy);
- ``outliers``: items ranked by 1 - mean cosine to their k nearest neighbours;
- ``output``: JSON-ready dicts, CSV and the keep list.
"""

from xmodal.pipelines.curation.duplicates import (
    DuplicateConfig,
    DuplicateGroup,
    DuplicateReport,
    Member,
    check_threshold,
    find_duplicates,
)
from xmodal.pipelines.curation.keepers import KEEP_RULES, choose_keeper
from xmodal.pipelines.curation.outliers import (
    Neighbour,
    Outlier,
    OutlierConfig,
    OutlierReport,
    find_outliers,
)

__all__ = [
    "KEEP_RULES",
    "DuplicateConfig",
    "DuplicateGroup",
    "DuplicateReport",
    "Member",
    "Neighbour",
    "Outlier",
    "OutlierConfig",
    "OutlierReport",
    "check_threshold",
    "choose_keeper",
    "find_duplicates",
    "find_outliers",
]
