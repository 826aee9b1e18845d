"""The data contract: the names of the files in a build folder and in a published dataset.

A build folder (``prefdelta build``) holds ``traces.parquet``, ``pairs.parquet``,
``recipe.yaml`` and, written last, ``summary.json`` with the tables' sha256. A published
dataset (a Hub repo or a folder, the same files in both) holds:

    data/pairs/train-00000-of-00001.parquet   (+ data/pairs/test-... when a test split is asked)
    data/traces/train-00000-of-00001.parquet
    data/reviews/train-00000-of-00001.parquet (after ``prefdelta review pull``)
    recipe.yaml
    plots/*.png
    README.md                                 (the card, with the `configs:` block)

Every stage that writes or reads these imports the names from here. This module is the
bottom of the package: it imports nothing from prefdelta.
"""

from __future__ import annotations

__all__ = [
    "CARD",
    "FOLDER_MANIFEST",
    "HASHED_FILES",
    "MANAGED_DIRS",
    "MANAGED_FILES",
    "PAIRS",
    "PAIRS_FILE",
    "RECIPE_FILE",
    "REPO_TYPE",
    "REQUIRED_PAIR_COLUMNS",
    "REVIEWS",
    "SUMMARY",
    "TRACES",
    "TRACES_FILE",
    "config_dir",
    "data_path",
    "size_category",
]

# --------------------------------------------------------------------------- a build folder

SUMMARY = "summary.json"
TRACES_FILE = "traces.parquet"
PAIRS_FILE = "pairs.parquet"
RECIPE_FILE = "recipe.yaml"
# The files summary.json vouches for (their sha256): a build is published only when they match.
HASHED_FILES = (TRACES_FILE, PAIRS_FILE, RECIPE_FILE)
REQUIRED_PAIR_COLUMNS = ("pair_id", "prompt_id", "prompt", "chosen", "rejected", "delta")

# --------------------------------------------------------------------------- a published dataset

# A published dataset on the Hub is a repo of this type.
REPO_TYPE = "dataset"
# The configs of the card's `configs:` block (`pairs` is the default).
PAIRS, TRACES, REVIEWS = "pairs", "traces", "reviews"
CARD = "README.md"
# Paths a publish owns: files under these that the new layout lacks are deleted on the Hub.
MANAGED_DIRS = ("data/", "plots/")
MANAGED_FILES = (CARD, RECIPE_FILE)
# In a published folder: the files its publish wrote, the only ones a republish touches.
FOLDER_MANIFEST = ".prefdelta-manifest.json"


def config_dir(config: str) -> str:
    """The folder of a config's parquet files, ``data/<config>/``."""
    return f"data/{config}/"


def data_path(config: str, split: str) -> str:
    """The one parquet file of ``split`` in ``config``."""
    return f"{config_dir(config)}{split}-00000-of-00001.parquet"


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` rows."""
    for power, label in enumerate(_SIZE_LABELS, start=3):
        if n < 10**power:
            return label
    return "n>1T"


_SIZE_LABELS = (
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
)
