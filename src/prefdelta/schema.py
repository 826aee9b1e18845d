"""The data contract: the names of the files in a build folder and in a published dataset.

A build folder (``prefdelta build``) holds ``traces.parquet``, ``pairs.parquet``,
``recipe.yaml`` and, written last, ``summary.json`` with the tables' sha256; beside them
``store.sqlite`` (every model call's result, so a rerun resumes) and ``logs/`` (the error
logs of a failed command). A published
dataset (a Hub repo or a folder, the same files in both) holds:

    data/pairs/train-00000-of-00001.parquet   (+ data/pairs/test-... when a test split is asked)
    data/traces/train-00000-of-00001.parquet
    data/reviews/train-00000-of-00001.parquet (after ``prefdelta review pull``)
    recipe.yaml
    plots/*.png
    README.md                                 (the card, with the `configs:` block)
    .prefdelta-manifest.json                  (the files above that prefdelta wrote)

Every stage that writes or reads these imports the names from here. This module is the
bottom of the package: it imports nothing from prefdelta.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

__all__ = [
    "CARD",
    "FOLDER_MANIFEST",
    "HASHED_FILES",
    "LABEL_COLUMN",
    "LOGS",
    "PAIRS",
    "PAIRS_FILE",
    "PLACEMENT_LOG",
    "RECIPE_FILE",
    "REPO_TYPE",
    "REQUIRED_PAIR_COLUMNS",
    "REVIEWS",
    "STORE",
    "SUMMARY",
    "TRACES",
    "TRACES_FILE",
    "config_dir",
    "data_path",
    "pairs_schema",
    "rank_by_delta",
    "size_category",
    "traces_schema",
]

# --------------------------------------------------------------------------- a build folder

SUMMARY = "summary.json"
TRACES_FILE = "traces.parquet"
PAIRS_FILE = "pairs.parquet"
RECIPE_FILE = "recipe.yaml"
STORE = "store.sqlite"  # every model call's result, keyed, so a rerun resumes
LOGS = "logs"  # the command's error logs (tracebacks), when a build fails
PLACEMENT_LOG = "ray-placement.jsonl"  # in LOGS, on Ray: one line per batch, where it ran
STOP_REQUEST = ".stop-requested"  # while a pipeline runs: Ctrl-C reached the build
# The files summary.json vouches for (their sha256): a build is published only when they match.
HASHED_FILES = (TRACES_FILE, PAIRS_FILE, RECIPE_FILE)
# a preference dataset's pairs (pairing strategy columns): does the judge agree with its label
LABEL_COLUMN = "label_agrees"
REQUIRED_PAIR_COLUMNS = ("pair_id", "prompt_id", "prompt", "chosen", "rejected", "delta")

# The tables' columns, per judge dimension names ``dims``.


def _dim_struct(dims: list[str], kind: pa.DataType) -> pa.DataType:
    return pa.struct([(d, kind) for d in dims])


def traces_schema(dims: list[str], judges: list[str] | tuple[str, ...] = ()) -> pa.Schema:
    """The traces table; ``judges``: a judge panel's names, each with its own columns
    (``scores_<judge>``, ``rationales_<judge>``, ``judge_status_<judge>``,
    ``judge_problem_<judge>``, ``judge_raw_<judge>``) after the panel's combined ones."""
    per_judge = [
        column
        for j in judges
        for column in (
            (f"scores_{j}", _dim_struct(dims, pa.float64())),
            (f"rationales_{j}", _dim_struct(dims, pa.string())),
            (f"judge_status_{j}", pa.string()),
            (f"judge_problem_{j}", pa.string()),
            (f"judge_raw_{j}", pa.list_(pa.string())),
        )
    ]
    return pa.schema(
        [
            ("trace_key", pa.string()),
            ("prompt_id", pa.string()),
            ("prompt", pa.string()),
            ("reference", pa.string()),
            ("generator", pa.string()),
            ("model", pa.string()),
            ("sample", pa.int32()),
            ("trace", pa.string()),
            ("finish_reason", pa.string()),
            ("output_tokens", pa.int64()),
            ("correct", pa.bool_()),
            ("scores", _dim_struct(dims, pa.float64())),
            ("aggregate", pa.float64()),
            ("score_spread", _dim_struct(dims, pa.float64())),
            ("score_kind", pa.string()),
            ("score_probs", _dim_struct(dims, pa.list_(pa.float64()))),
            ("score_fallback", pa.string()),
            ("rationales", _dim_struct(dims, pa.string())),
            ("judge_status", pa.string()),
            ("judge_problem", pa.string()),
            ("judge_raw", pa.list_(pa.string())),
            ("judge_reasoning", pa.list_(pa.string())),
            ("judge_attempts", pa.int32()),
            ("judge_model", pa.string()),
            *per_judge,
        ]
    )


def pairs_schema(dims: list[str], *, labelled: bool = False) -> pa.Schema:
    """``labelled``: the pairs are a preference dataset's own (pairing strategy columns),
    with ``label_agrees`` (the judge's delta has the sign of the dataset's label)."""
    message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    label = [(LABEL_COLUMN, pa.bool_())] if labelled else []
    return pa.schema(
        [
            ("pair_id", pa.string()),
            ("prompt_id", pa.string()),
            ("prompt", message),
            ("chosen", message),
            ("rejected", message),
            ("chosen_generator", pa.string()),
            ("rejected_generator", pa.string()),
            ("chosen_model", pa.string()),
            ("rejected_model", pa.string()),
            ("chosen_scores", _dim_struct(dims, pa.float64())),
            ("rejected_scores", _dim_struct(dims, pa.float64())),
            *[(f"delta_{d}", pa.float64()) for d in dims],
            ("delta", pa.float64()),
            *label,
            ("generator_delta", pa.float64()),
            ("generator_accuracy_delta", pa.float64()),
            ("chosen_correct", pa.bool_()),
            ("rejected_correct", pa.bool_()),
            ("judge_model", pa.string()),
            ("chosen_judge_status", pa.string()),
            ("rejected_judge_status", pa.string()),
            ("chosen_trace_key", pa.string()),
            ("rejected_trace_key", pa.string()),
        ]
    )


# The pairs' one order, wherever they are cut or sorted.


def rank_by_delta(table: Any, column: str) -> Any:
    """Row indices of a pyarrow ``table``, highest ``column`` first.

    Pairs without a delta (the judge could not score one side) come last; ties are broken
    by ``pair_id``, so a top-k cut is the same on every machine and in every run.
    """
    import pyarrow.compute as pc

    return pc.sort_indices(
        table.select([column, "pair_id"]),
        sort_keys=[(column, "descending", "at_end"), ("pair_id", "ascending", "at_end")],
    )


# --------------------------------------------------------------------------- a published dataset

# A published dataset on the Hub is a repo of this type.
REPO_TYPE = "dataset"
# The configs of the card's `configs:` block (`pairs` is the default).
PAIRS, TRACES, REVIEWS = "pairs", "traces", "reviews"
CARD = "README.md"
# In a published dataset (a folder or a Hub repo): the files its publish wrote, the only
# ones a republish replaces or deletes. A target without one owns nothing.
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
