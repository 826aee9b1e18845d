"""The training split: delta-filtered pairs for DPO, labelled single traces for KTO.

Why here and not in the scripts: the selection is what an experiment *is* (the paper
compares top-k% by a dimension's delta against a random k%, and one generator pair
against another), so it is built once, counted, and described in the model card. DPO
takes the pairs of :func:`prefdelta.load_pairs` as they are; KTO takes either those pairs
unpaired (chosen desirable, rejected undesirable) or every judged trace of the ``traces``
config, labelled by absolute score thresholds, with loss weights that balance the two
classes as TRL's KTO documentation advises.
The DPO and KTO selections share one source resolution, one filter and one set of counts,
so they live together.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdelta.loading import CORRECTNESS, PairsLoadError, PairsSource, load_pairs
from prefdelta.locations import is_local_path
from prefdelta.train.configs import DataArguments, KTODataArguments, TrainConfigError

if TYPE_CHECKING:
    import datasets

PAIR_COLUMNS = ("pair_id", "prompt", "chosen", "rejected")
TRACE_COLUMNS = ("prompt_id", "prompt", "trace", "judge_status")
# TRL's KTO docs: desirable_weight * n_desirable / (undesirable_weight * n_undesirable) in [1, 4/3]
KTO_RATIO_RANGE = (1.0, 4 / 3)


class TrainDataError(TrainConfigError):
    """A selection that leaves nothing, or a dataset without a column the options need."""


@dataclass(frozen=True)
class DatasetSource:
    """A published dataset as the training run saw it: where, and which exact content."""

    ref: str  # as written in the config
    local: bool
    path: str  # absolute folder, or the Hub repo id
    revision: str | None  # as written (Hub only)
    resolved: str  # Hub: the commit sha; folder: sha256 of its data files

    @property
    def display(self) -> str:
        return self.path if self.local else f"{self.path}@{self.resolved[:12]}"


@dataclass
class Selection:
    """The training examples and how they were selected and counted."""

    dataset: datasets.Dataset
    source: DatasetSource
    counts: dict[str, Any] = field(default_factory=dict)
    eval_dataset: datasets.Dataset | None = None
    weights: tuple[float, float] | None = None  # KTO (desirable, undesirable)


def is_local(ref: str) -> bool:
    """The rule :func:`prefdelta.load_pairs` uses (:mod:`prefdelta.locations`)."""
    return is_local_path(ref)


def dataset_source(ref: str, revision: str | None) -> DatasetSource:
    """Resolve the exact content: a Hub commit, or a content hash of a folder's data files."""
    if is_local(ref):
        folder = Path(ref).expanduser().resolve()
        if not folder.is_dir():
            raise TrainDataError(f"dataset: {ref}: no such folder")
        if revision is not None:
            raise TrainDataError("revision applies to Hub datasets, not to a local folder")
        digest = hashlib.sha256()
        files = sorted((folder / "data").rglob("*.parquet"))
        if not files:
            raise TrainDataError(
                f"{folder} is not a published prefdelta dataset (no data/*/*.parquet); "
                "publish a build with `prefdelta publish BUILD --to ./folder`"
            )
        for f in files:
            digest.update(f.relative_to(folder).as_posix().encode() + b"\0")
            with f.open("rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    digest.update(chunk)
        return DatasetSource(ref, True, str(folder), None, "sha256:" + digest.hexdigest()[:32])
    from huggingface_hub import HfApi

    try:
        sha = HfApi().dataset_info(ref, revision=revision).sha
    except Exception as exc:  # offline, private, missing: say so in one line
        # `outputs/demo` is a Hub id by spelling and a folder by intent: say both
        local = f"no local folder {ref} (relative to the current directory {Path.cwd()}), and "
        raise TrainDataError(
            f"dataset: {local}cannot resolve {ref}@{revision or 'main'} on the Hub: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None
    return DatasetSource(ref, False, ref, revision, str(sha or revision or "main"))


def read_traces(source: DatasetSource, columns: list[str] | None = None) -> datasets.Dataset:
    """The published ``traces`` config of ``source`` at its resolved revision."""
    import datasets

    with fresh_cache(source):
        return datasets.load_dataset(
            source.path,
            "traces",
            split="train",
            revision=None if source.local else source.resolved,
            columns=columns,
        )


@contextmanager
def fresh_cache(source: DatasetSource) -> Iterator[None]:
    """Load a local folder through a ``datasets`` cache keyed by its content.

    datasets 5.2.0 names the cache of a local folder with a README ``configs:`` block by
    the folder's name and configs, not by its path or files: a folder republished with a
    new build, or another folder of the same name, loads the rows cached first (reproduced
    in tests/test_train.py). Training must see the content whose hash the card records, so
    each content revision gets its own cache root. Hub datasets are keyed by commit already.
    """
    if not source.local:
        yield
        return
    import datasets

    root = datasets.config.HF_DATASETS_CACHE
    key = source.resolved.replace(":", "-")
    datasets.config.HF_DATASETS_CACHE = Path(root) / "prefdelta-local" / key
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_CACHE = root


def _pairs_files(source: DatasetSource, split: str) -> PairsSource:
    """The locator load_pairs uses (same files, same errors), at the commit the source
    resolved to: every check, count and load of one run describes that one commit, even
    when the branch moves meanwhile."""
    return PairsSource.at(source.path, split, None if source.local else source.resolved)


def pairs_column_names(source: DatasetSource, split: str) -> list[str]:
    """The columns of a pairs split, from its parquet schema (no rows are read)."""
    try:
        return list(_pairs_files(source, split).schema().names)
    except PairsLoadError as exc:
        raise TrainDataError(str(exc)) from None


def _pairs_total(source: DatasetSource, split: str) -> int:
    import pyarrow.parquet as pq

    files = _pairs_files(source, split).files()
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def require_columns(present: list[str], needed: dict[str, str], where: str, has_it: str) -> None:
    """One line naming the first missing column, what needs it, and what has it."""
    for column, why in needed.items():
        if column not in present:
            raise TrainDataError(f"{where} has no column {column!r}, needed by {why}; {has_it}")


def _needed_pair_columns(args: DataArguments) -> dict[str, str]:
    needed = {c: "training (TRL's prompt/chosen/rejected format)" for c in PAIR_COLUMNS}
    needed["pair_id"] = "the selection (ties are broken by pair_id)"
    if args.generator_pairs is not None:
        needed["chosen_generator"] = "generator_pairs"
        needed["rejected_generator"] = "generator_pairs"
    for column, _ in CORRECTNESS.get(args.correctness or "", ()):
        needed[column] = f"correctness {args.correctness!r}"
    return needed


def _load_pair_split(
    args: DataArguments, source: DatasetSource, split: str, *, filtered: bool
) -> datasets.Dataset:
    where = f"{source.display} (config pairs, split {split})"
    present = pairs_column_names(source, split)
    needed = _needed_pair_columns(args) if filtered else {c: "training" for c in PAIR_COLUMNS}
    require_columns(
        present,
        needed,
        where,
        "the `pairs` config that `prefdelta publish` writes has it"
        + (
            " (correctness needs prompts.reference_column in the build recipe)"
            if args.correctness
            else ""
        ),
    )
    if _pairs_total(source, split) == 0:
        raise TrainDataError(
            f"no pairs in {where}: the build paired nothing (judge failures or dropped "
            "ties; its card and summary count why)"
        )
    revision = None if source.local else source.resolved
    try:
        if not filtered:
            with fresh_cache(source):
                return load_pairs(source.path, split=split, revision=revision)
        with fresh_cache(source):
            ds = load_pairs(
                source.path,
                split=split,
                min_delta=args.min_delta,
                dimension=args.dimension,
                top_fraction=args.top_fraction,
                generator_pairs=args.pair_tuples,
                correctness=args.correctness,
                revision=revision,
            )
    except PairsLoadError as exc:
        raise TrainDataError(" ".join(str(exc).split())) from None
    if args.random_fraction is not None:
        ds = ds.select(_random_rows(ds, args, math.ceil(args.random_fraction * len(ds))))
    elif args.num_pairs is not None:
        if len(ds) < args.num_pairs:
            raise TrainDataError(
                f"num_pairs: {args.num_pairs} asked, but the filters keep only {len(ds)} "
                f"pairs of {where}"
            )
        ds = ds.select(_random_rows(ds, args, args.num_pairs))
    return ds


def _random_rows(ds: datasets.Dataset, args: DataArguments, k: int) -> list[int]:
    """The control for ``top_fraction`` (and ``num_pairs``' draw): ``k`` rows at random.

    ``top_fraction`` ranks pairs the judge scored first (a pair it could not score has a
    null delta and sorts last), so the random draw takes scored pairs first too.
    """
    column = args.dimension if args.dimension in ds.column_names else f"delta_{args.dimension}"
    values = ds[column] if column in ds.column_names else [0.0] * len(ds)
    rng = random.Random(args.selection_seed)
    scored = [i for i, v in enumerate(values) if v is not None]
    unscored = [i for i, v in enumerate(values) if v is None]
    rng.shuffle(scored)
    rng.shuffle(unscored)
    return sorted((scored + unscored)[:k])


def _pair_counts(ds: datasets.Dataset, args: DataArguments, total: int) -> dict[str, Any]:
    counts: dict[str, Any] = {"pairs_available": total, "pairs_selected": len(ds)}
    if {"chosen_generator", "rejected_generator"} <= set(ds.column_names):
        pairs = Counter(zip(ds["chosen_generator"], ds["rejected_generator"], strict=True))
        counts["by_generator_pair"] = {f"{c}:{r}": n for (c, r), n in sorted(pairs.items())}
    column = args.dimension if args.dimension in ds.column_names else f"delta_{args.dimension}"
    if column in ds.column_names and len(ds):
        values = [v for v in ds[column] if v is not None]
        if values:
            counts["delta_column"] = column
            counts["delta_mean"] = round(sum(values) / len(values), 4)
            counts["delta_min"] = min(values)
    return counts


def load_dpo_selection(args: DataArguments) -> Selection:
    """The filtered pairs split (and the eval split, unfiltered), ready for ``DPOTrainer``."""
    source = dataset_source(args.dataset, args.revision)
    ds = _load_pair_split(args, source, args.split, filtered=True)
    counts = _pair_counts(ds, args, _pairs_total(source, args.split))
    eval_ds = None
    if args.eval_split is not None:
        eval_ds = _load_pair_split(args, source, args.eval_split, filtered=False)
        counts["eval_pairs"] = len(eval_ds)
    return Selection(ds, source, counts, eval_ds)


# --------------------------------------------------------------------------- KTO


def balanced_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight): the minority class is up-weighted so that
    ``desirable_weight * n_desirable / (undesirable_weight * n_undesirable)`` lies in TRL's
    recommended [1, 4/3], as close to 1 as two decimals allow (TRL checks with two-decimal
    rounding, so the weight is rounded away from the bound it would otherwise cross).
    """
    if n_desirable <= 0 or n_undesirable <= 0:
        raise TrainDataError(
            f"KTO needs desirable and undesirable examples; got {n_desirable} desirable, "
            f"{n_undesirable} undesirable"
        )
    if n_desirable == n_undesirable:
        return 1.0, 1.0
    cents = Decimal("0.01")
    if n_desirable < n_undesirable:  # up-weight desirable: ratio >= 1 needs rounding up
        w = (Decimal(n_undesirable) / Decimal(n_desirable)).quantize(cents, rounding=ROUND_CEILING)
        while float(w) * n_desirable < n_undesirable:  # float products must keep ratio >= 1 too
            w += cents
        return float(w), 1.0
    # the undesirable side is the minority: its weight rounds down to keep ratio >= 1
    w = (Decimal(n_desirable) / Decimal(n_undesirable)).quantize(cents, rounding=ROUND_FLOOR)
    while float(w) * n_undesirable > n_desirable:
        w -= cents
    return 1.0, float(w)


def _conversation(role: str, content: str) -> list[dict[str, str]]:
    return [{"role": role, "content": content}]


def _unpair(ds: datasets.Dataset) -> tuple[list[dict[str, Any]], int]:
    """Chosen traces desirable, rejected undesirable, each trace once.

    With several rejected generators the chosen trace recurs in every pair of its prompt;
    counting it once per pair would inflate the desirable class. A trace labelled both ways
    (possible with best-vs-worst pools) is ambiguous and dropped (counted).
    """
    has_keys = {"chosen_trace_key", "rejected_trace_key"} <= set(ds.column_names)
    rows: dict[str, dict[str, Any]] = {}
    labels: dict[str, set[bool]] = {}
    for row in ds:
        for side, label in (("chosen", True), ("rejected", False)):
            completion = row[side]
            key = (
                row[f"{side}_trace_key"]
                if has_keys
                else hashlib.sha256(repr((row["prompt"], completion)).encode()).hexdigest()
            )
            labels.setdefault(key, set()).add(label)
            rows.setdefault(
                key,
                {
                    "prompt": row["prompt"],
                    "completion": completion,
                    "label": label,
                    "prompt_id": row.get("prompt_id"),
                    "generator": row.get(f"{side}_generator"),
                    "trace_key": key,
                },
            )
    ambiguous = [k for k, v in labels.items() if len(v) > 1]
    for k in ambiguous:
        rows.pop(k)
    return list(rows.values()), len(ambiguous)


def _other_split_prompts(source: DatasetSource, split: str) -> set[str]:
    """Prompt ids of the pairs splits other than ``split`` (held out: never trained on)."""
    import datasets

    revision = None if source.local else source.resolved
    with fresh_cache(source):
        try:
            splits = datasets.get_dataset_split_names(source.path, "pairs", revision=revision)
        except Exception:
            return set()
        out: set[str] = set()
        for other in splits:
            if other != split:
                part = datasets.load_dataset(
                    source.path, "pairs", split=other, revision=revision, columns=["prompt_id"]
                )
                out.update(part["prompt_id"])
    return out


def _load_traces(args: KTODataArguments, source: DatasetSource) -> tuple[list[dict], dict]:
    import pyarrow.compute as pc

    where = f"{source.display} (config traces)"
    missing = TrainDataError(
        f"{source.display} has no `traces` config (data/traces/*.parquet), needed by "
        "kto_source traces; datasets published by `prefdelta publish` have it "
        "(or use kto_source: pairs)"
    )
    if source.local and not any((Path(source.path) / "data" / "traces").glob("*.parquet")):
        raise missing
    try:
        table = read_traces(source).data.table
    except (ValueError, FileNotFoundError) as exc:
        if "traces" in str(exc) or "data_files" in str(exc) or "BuilderConfig" in str(exc):
            raise missing from None
        raise
    present = table.column_names
    aggregate = args.dimension in ("delta", "aggregate")
    needed = {c: "kto_source traces" for c in TRACE_COLUMNS}
    needed["aggregate" if aggregate else "scores"] = f"thresholds on {args.dimension!r}"
    require_columns(
        present, needed, where, "the `traces` config that `prefdelta publish` writes has it"
    )
    n_all = table.num_rows
    table = table.filter(pc.equal(table.column("judge_status"), "ok"))
    if aggregate:
        scores = table.column("aggregate").to_pylist()
    else:
        dims = [f.name for f in table.schema.field("scores").type]
        if args.dimension not in dims:
            raise TrainDataError(
                f"dimension {args.dimension!r} is not scored in {where}; scores hold: "
                f"{', '.join(dims)} (or use aggregate)"
            )
        scores = pc.struct_field(table.column("scores"), args.dimension).to_pylist()
    held_out = _other_split_prompts(source, args.split)
    rows: list[dict[str, Any]] = []
    skipped_held_out = 0
    for record, score in zip(table.to_pylist(), scores, strict=True):
        if score is None:
            continue
        if record["prompt_id"] in held_out:
            skipped_held_out += 1
            continue
        if score >= args.desirable_min_score:  # type: ignore[operator]
            label = True
        elif score <= args.undesirable_max_score:  # type: ignore[operator]
            label = False
        else:
            continue
        rows.append(
            {
                "prompt": _conversation("user", record["prompt"]),
                "completion": _conversation("assistant", record["trace"]),
                "label": label,
                "prompt_id": record["prompt_id"],
                "generator": record.get("generator"),
                "trace_key": record.get("trace_key"),
            }
        )
    counts = {
        "traces_available": n_all,
        "traces_judged_ok": table.num_rows,
        "traces_held_out_prompts": skipped_held_out,
    }
    return rows, counts


def load_kto_selection(args: KTODataArguments, seed: int = 0) -> Selection:
    """Unpaired, labelled, shuffled examples (``prompt``/``completion``/``label``) and weights.

    Shuffled with ``seed``: KTO's KL term needs ``train_sampling_strategy="sequential"``, so
    the dataset order is the batch order, and a batch should mix both labels.
    """
    import datasets

    source = dataset_source(args.dataset, args.revision)
    counts: dict[str, Any]
    if args.kto_source == "pairs":
        pairs = _load_pair_split(args, source, args.split, filtered=True)
        counts = _pair_counts(pairs, args, _pairs_total(source, args.split))
        rows, ambiguous = _unpair(pairs)
        counts["ambiguous_traces_dropped"] = ambiguous
    else:
        rows, counts = _load_traces(args, source)
    n_d = sum(1 for r in rows if r["label"])
    n_u = len(rows) - n_d
    counts.update(desirable=n_d, undesirable=n_u)
    if not rows and args.kto_source == "traces":
        raise TrainDataError(
            f"no traces left in {source.display}: none scored >= "
            f"{args.desirable_min_score:g} or <= {args.undesirable_max_score:g} on "
            f"{args.dimension!r} ({counts.get('traces_judged_ok', 0)} judged ok, "
            f"{counts.get('traces_held_out_prompts', 0)} of held-out prompts)"
        )
    weights = balanced_weights(n_d, n_u) if args.balance_weights else None
    if weights is None and (n_d == 0 or n_u == 0):
        balanced_weights(n_d, n_u)  # the same one-line error
    rng = random.Random(seed)
    rng.shuffle(rows)
    ds = datasets.Dataset.from_list(rows)
    eval_ds = None
    if args.eval_split is not None:
        eval_pairs = _load_pair_split(args, source, args.eval_split, filtered=False)
        eval_rows, _ = _unpair(eval_pairs)
        eval_ds = datasets.Dataset.from_list(eval_rows)
        counts["eval_examples"] = len(eval_rows)
    return Selection(ds, source, counts, eval_ds, weights)
