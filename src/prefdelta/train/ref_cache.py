"""Reference log-probs computed once per (reference model, dataset revision), reused by every run.

Why: the paper's experiments train many times on subsets of one dataset (top k% by a
dimension's delta, a random k%, one generator pair at a time) against the same reference
model. TRL's ``precompute_ref_log_probs`` drops the reference forward from training, but
caches by the fingerprint of the exact (filtered) dataset, so every new subset pays the
whole reference pass again. Here the values are stored per sequence, in a cache of their
own (never inside the dataset, which may be read-only, shared or published), and a later
run with another filter computes only the sequences it has never seen.

How it plugs into TRL 1.16: with ``precompute_ref_log_probs=True`` the trainers call
``self._precompute_ref_logps(dataset, name, batch_size)`` on the tokenized train and eval
datasets from ``__init__``; the returned dataset carries ``ref_chosen_logps`` /
``ref_rejected_logps`` (DPO) or ``ref_logps`` / ``ref_KL_logps`` (KTO), the collators pass
them through, and ``_compute_loss`` reads them instead of running the reference model (no
reference model is even loaded: ``ref_model`` stays ``None``). :class:`RefCacheMixin`
overrides that one method: it looks every sequence up in the cache, runs TRL's own
``compute_ref_log_probs`` on the missing rows only (longest first, so padding is small
and an out-of-memory shows at once), stores them, and attaches the columns.

Where. The training config's ``ref_cache_dir`` when set, else ``$PREFDELTA_REF_CACHE``,
else ``ref_logps`` under prefdelta's cache (``$PREFDELTA_CACHE``, else
``~/.cache/prefdelta``); below it, one folder per dataset (a Hub id, or a local folder's
absolute path).

Keys. A folder ``<root>/<key>/`` holds one (reference model, dataset revision, settings)
combination, where the reference is TRL's own hash of its weights (``hash_module``, what
TRL keys its cache with) and the settings are what changes a log-prob: ``max_length``,
``truncation_mode``, the autocast dtype. Inside, each entry is keyed by a hash of the
tokens of one (prompt, completion) sequence: a DPO pair is its two sequences. So a pair
selected by another filter hits the cache, and a changed tokenizer or chat template
simply misses instead of returning stale values. Files are append-only parquet shards
written under a temporary name and renamed, so concurrent runs never see half a shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdelta.files import atomic_write

if TYPE_CHECKING:
    import datasets

CACHE_VERSION = 1
META = "meta.json"
KEY_BYTES = 16
COMPACT_AT = 32  # shards; beyond this they are merged into one


def sequence_key(prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> bytes:
    """Hash of one tokenized (prompt, completion); the prompt length is part of the key."""
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    h.update(struct.pack("<q", len(prompt_ids)))
    h.update(struct.pack(f"<{len(prompt_ids)}q", *prompt_ids))
    h.update(struct.pack(f"<{len(completion_ids)}q", *completion_ids))
    return h.digest()


@dataclass(frozen=True)
class RefCacheLocation:
    """Where one dataset's reference log-probs live, and the dataset revision they belong to."""

    root: Path  # .../ref_logps
    dataset: str
    dataset_revision: str

    @classmethod
    def for_dataset(
        cls, source: Any, cache_dir: str | os.PathLike[str] | None = None
    ) -> RefCacheLocation:
        """Under ``cache_dir`` when given, else :func:`ref_cache_root`: one folder per
        dataset, named by its Hub id or its local folder's absolute path. Nothing is ever
        written into the dataset itself."""
        name = str(Path(source.path).resolve()) if source.local else source.path
        root = Path(cache_dir).expanduser() if cache_dir is not None else ref_cache_root()
        return cls(root / _slug(name), source.path, source.resolved)

    def store(self, reference: str, settings: dict[str, Any]) -> RefLogpStore:
        meta = {
            "version": CACHE_VERSION,
            "dataset": self.dataset,
            "dataset_revision": self.dataset_revision,
            "reference": reference,
            "settings": settings,
        }
        blob = json.dumps(
            {k: v for k, v in meta.items() if k != "dataset"}, sort_keys=True
        ).encode()
        key = hashlib.sha256(blob).hexdigest()[:16]
        return RefLogpStore(self.root / key, meta)


def ref_cache_root() -> Path:
    """``$PREFDELTA_REF_CACHE``, else ``ref_logps`` in prefdelta's cache directory."""
    from prefdelta.local_models import cache_dir

    root = os.environ.get("PREFDELTA_REF_CACHE")
    return Path(root).expanduser() if root else cache_dir() / "ref_logps"


def _slug(path: str) -> str:
    text = path.strip("/").replace("/", "--")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[-120:]


class RefLogpStore:
    """One cache folder: sequence key -> reference log-prob, as append-only parquet shards."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.meta = meta

    def load(self) -> dict[bytes, float]:
        import pyarrow.parquet as pq

        out: dict[bytes, float] = {}
        if not self.folder.is_dir():
            return out
        for shard in sorted(self.folder.glob("part-*.parquet")):
            table = pq.read_table(shard)
            out.update(
                zip(table.column("key").to_pylist(), table.column("logp").to_pylist(), strict=True)
            )
        return out

    def add(self, entries: dict[bytes, float]) -> Path | None:
        """Write ``entries`` as a new shard (atomically); merge shards when there are many."""
        if not entries:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / META
        if not meta_path.is_file():
            atomic_write(meta_path, json.dumps(self.meta, indent=2, sort_keys=True).encode())
        shard = self._write_shard(entries)
        shards = sorted(self.folder.glob("part-*.parquet"))
        if len(shards) > COMPACT_AT:
            self._compact(shards)
        return shard

    def _write_shard(self, entries: dict[bytes, float]) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "key": pa.array(list(entries), pa.binary(KEY_BYTES)),
                "logp": pa.array(list(entries.values()), pa.float64()),
            }
        )
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.folder)
        os.close(fd)
        pq.write_table(table, tmp)
        os.replace(tmp, self.folder / name)
        return self.folder / name

    def _compact(self, shards: list[Path]) -> None:
        import pyarrow.parquet as pq

        merged: dict[bytes, float] = {}
        for shard in shards:
            t = pq.read_table(shard)
            merged.update(
                zip(t.column("key").to_pylist(), t.column("logp").to_pylist(), strict=True)
            )
        self._write_shard(merged)
        for shard in shards:  # a concurrent reader may miss nothing: the merged shard is in place
            shard.unlink(missing_ok=True)


def _check_reference_weights() -> None:
    """Refuse FSDP's ``cpu_ram_efficient_loading``: with it transformers loads the weights
    on rank 0 only (the other ranks hold zeros until FSDP shares rank 0's at ``prepare``),
    but the reference log-probs are computed before that, from ``__init__``, each rank on
    its shard of the rows: the other ranks' values would be wrong, and cached for every
    later run. Measured on a 2-process CPU run: values off by up to 1.3 nats."""
    from transformers.integrations.fsdp import is_fsdp_enabled

    if is_fsdp_enabled():
        from prefdelta.train.configs import TrainConfigError

        raise TrainConfigError(
            "fsdp_cpu_ram_efficient_loading: set it to false in the accelerate config: the "
            "reference log-probs are computed before FSDP gives every process the weights "
            "(recipes/accelerate/fsdp.yaml sets it)"
        )


def _row_keys(
    dataset: datasets.Dataset, columns: Sequence[tuple[str, str, str]]
) -> tuple[dict[str, list[bytes]], list[int]]:
    """Per output column, the key of each row's sequence; and each row's longest length."""
    fields = sorted({f for _, p, c in columns for f in (p, c)})
    keys: dict[str, list[bytes]] = {name: [] for name, _, _ in columns}
    lengths: list[int] = []
    for batch in dataset.select_columns(fields).iter(batch_size=1024):
        n = len(batch[fields[0]])
        for i in range(n):
            longest = 0
            for name, p, c in columns:
                keys[name].append(sequence_key(batch[p][i], batch[c][i]))
                longest = max(longest, len(batch[p][i]) + len(batch[c][i]))
            lengths.append(longest)
    return keys, lengths


class RefCacheMixin:
    """Mixed into TRL's ``DPOTrainer`` / ``KTOTrainer``: reference log-probs from the cache.

    Subclasses say which columns TRL expects and which token fields each one scores
    (:meth:`_ref_columns`). Everything else (the model used as reference, PEFT adapters
    disabled, DeepSpeed's inference engine, gathering across processes) is TRL's own code.
    """

    ref_cache: RefCacheLocation | None = None

    def _ref_columns(
        self,
    ) -> list[tuple[str, str, str]]:  # (column, prompt field, completion field)
        raise NotImplementedError

    def _ref_settings(self) -> dict[str, Any]:
        args = self.args  # type: ignore[attr-defined]
        return {
            "max_length": args.max_length,
            "truncation_mode": getattr(args, "truncation_mode", None),
            "autocast": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "columns": [c for c, _, _ in self._ref_columns()],
        }

    def _ref_store(self) -> RefLogpStore:
        from accelerate.utils import broadcast_object_list

        if getattr(self, "_prefdelta_store", None) is None:
            # Under ZeRO-3 each rank hashes its own shard: rank 0's key names the folder.
            key = [self._precompute_model_hash]  # type: ignore[attr-defined]
            broadcast_object_list(key, from_process=0)
            assert self.ref_cache is not None
            self._prefdelta_store = self.ref_cache.store(str(key[0]), self._ref_settings())
            self._prefdelta_known: dict[bytes, float] = self._prefdelta_store.load()
            self.ref_cache_stats = {"sequences_cached": 0, "sequences_computed": 0, "forwards": 0}
        return self._prefdelta_store

    def _precompute_ref_logps(
        self, dataset: datasets.Dataset, name: str, batch_size: int
    ) -> datasets.Dataset:
        if self.ref_cache is None:
            _check_reference_weights()
            return super()._precompute_ref_logps(dataset, name, batch_size)  # type: ignore[misc]
        import datasets as hf_datasets

        if isinstance(dataset, hf_datasets.IterableDataset):
            raise ValueError("the reference log-prob cache needs a map-style dataset")
        store = self._ref_store()
        known = self._prefdelta_known
        columns = self._ref_columns()
        keys, lengths = _row_keys(dataset, columns)
        missing = [
            i for i in range(len(dataset)) if any(keys[c][i] not in known for c, _, _ in columns)
        ]
        hits = sum(k in known for c, _, _ in columns for k in keys[c])
        if missing:
            _check_reference_weights()
            missing.sort(key=lambda i: -lengths[i])
            values = self._compute_missing(dataset.select(missing), name, batch_size)
            new: dict[bytes, float] = {}
            for (column, _, _), column_values in zip(columns, values, strict=True):
                for row, value in zip(missing, column_values, strict=True):
                    if keys[column][row] not in known:  # a row may miss only one of its two
                        new[keys[column][row]] = value
            computed = len(new)
            known.update(new)
            if self.accelerator.is_main_process:  # type: ignore[attr-defined]
                store.add(new)
        else:
            computed = 0
        self.accelerator.wait_for_everyone()  # type: ignore[attr-defined]
        # per (row, column) found in the cache; unique sequences computed (a chosen trace
        # shared by several pairs is one sequence)
        self.ref_cache_stats["sequences_cached"] += hits
        self.ref_cache_stats["sequences_computed"] += computed
        for column, _, _ in columns:
            if column in dataset.column_names:
                dataset = dataset.remove_columns(column)
            dataset = dataset.add_column(
                column, [known[k] for k in keys[column]], feature=hf_datasets.Value("float32")
            )
        return dataset

    def _compute_missing(
        self, subset: datasets.Dataset, name: str, batch_size: int
    ) -> list[list[float]]:
        """TRL's own reference pass (``compute_ref_log_probs``) over ``subset``, in order.

        The pass leaves torch's random state as it found it: iterating a data loader
        draws from it, so a run whose log-probs were all cached would otherwise shuffle
        its batches differently from the same run computing them, and a rerun would not
        train on the same order.
        """
        import torch

        with torch.random.fork_rng(devices=[]):
            return self._reference_pass(subset, name, batch_size)

    def _reference_pass(
        self, subset: datasets.Dataset, name: str, batch_size: int
    ) -> list[list[float]]:
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        n_out = len(self._ref_columns())
        loader = DataLoader(
            subset,
            batch_size=batch_size,
            collate_fn=self.data_collator,  # type: ignore[attr-defined]
            num_workers=self.args.dataloader_num_workers,  # type: ignore[attr-defined]
            pin_memory=self.args.dataloader_pin_memory,  # type: ignore[attr-defined]
            shuffle=False,
        )
        loader = self.accelerator.prepare(loader)  # type: ignore[attr-defined]
        model = self._reference_for_precompute()
        out: list[list[float]] = [[] for _ in range(n_out)]
        for batch in tqdm(
            loader,
            desc=f"Reference log-probs for {len(subset)} uncached {name} rows",
            disable=bool(os.environ.get("TQDM_DISABLE", "")),
        ):
            results = self.compute_ref_log_probs(model, batch)  # type: ignore[attr-defined]
            self.ref_cache_stats["forwards"] += 1
            tensors = tuple(results[:n_out])
            gathered = self.accelerator.gather_for_metrics(tensors)  # type: ignore[attr-defined]
            for i, t in enumerate(gathered):
                out[i].extend(t.float().cpu().tolist())
        return out

    def _reference_for_precompute(self) -> Any:
        """The model TRL's own precompute would use: the same choice, DeepSpeed included."""
        if self.ref_model is None and self.is_deepspeed_enabled:  # type: ignore[attr-defined]
            from trl.models import prepare_deepspeed

            if self._precompute_engine is None:  # type: ignore[has-type]
                self._precompute_engine = prepare_deepspeed(self.model, self.accelerator)  # type: ignore[attr-defined]
            return self._precompute_engine
        return self.ref_model or self.model  # type: ignore[attr-defined]
