"""The data contract: Arrow schemas, status vocabularies, keys and typed configs."""

from clipcrawl.schemas.keys import is_valid_key, sample_key, shard_name
from clipcrawl.schemas.status import DedupMethod, PageStatus, Status
from clipcrawl.schemas.tables import (
    IMAGE_COLUMN,
    IMG2DATASET_COLUMNS,
    PAGES,
    PAIRS,
    SAMPLES,
    STATS,
    TRANSIENT_COLUMNS,
    check,
    conform,
)

__all__ = [
    "IMAGE_COLUMN",
    "IMG2DATASET_COLUMNS",
    "PAGES",
    "PAIRS",
    "SAMPLES",
    "STATS",
    "TRANSIENT_COLUMNS",
    "DedupMethod",
    "PageStatus",
    "Status",
    "check",
    "conform",
    "is_valid_key",
    "sample_key",
    "shard_name",
]
