"""Datasets: loading the three upload formats, their memory-mapped stored form, validation splits, summaries.

numpy and Pillow only — never torch — because the API validates uploads by running
`python -m ganft_core inspect` in a subprocess that must start fast and stay small. The one
module that imports torch, `ganft_core.data.feed` (batches on the training device), is not
imported here.
"""

from ganft_core.data.archive import ArchiveLimits
from ganft_core.data.load import FORMATS, detect_format, inspect_dataset, load_dataset
from ganft_core.data.split import align_validation, split_validation
from ganft_core.data.stored import ingest, load_stored, open_stored, stored_beside
from ganft_core.data.types import UNLABELED, Dataset, Layout, dataset_stats

__all__ = [
    "FORMATS",
    "UNLABELED",
    "ArchiveLimits",
    "Dataset",
    "Layout",
    "align_validation",
    "dataset_stats",
    "detect_format",
    "ingest",
    "inspect_dataset",
    "load_dataset",
    "load_stored",
    "open_stored",
    "split_validation",
    "stored_beside",
]
