"""``prefdelta.load_pairs``: delta, generator-pair and correctness filters pushed down into
parquet, a deterministic top fraction, and errors that say what is there instead. And proof
that a published folder needs nothing of prefdelta: plain ``datasets`` and TRL's
``DPOTrainer`` consume it in a process that never imports prefdelta.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest

import prefdelta
from prefdelta.loading import PairsLoadError, load_pairs
from prefdelta.push import publish_build
from support.build_fixtures import build_pairs, make_build
from support.hub_server import HubServer
from support.model_fixtures import tiny_model_dir  # noqa: F401  (a fixture)

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A published folder and the build's pairs (the expected rows)."""
    root = tmp_path_factory.mktemp("loading")
    build = make_build(root / "build", n_prompts=80, seed=3)
    out = root / "published"
    publish_build(build, out)
    return out, build_pairs(build)


def _ids(rows: Any) -> set[str]:
    return set(
        rows["pair_id"] if isinstance(rows, datasets.Dataset) else [r["pair_id"] for r in rows]
    )


def test_exported_from_package() -> None:
    assert prefdelta.load_pairs is load_pairs


def test_no_filter_returns_every_pair_trl_ready(published: tuple[Path, list[dict]]) -> None:
    folder, rows = published
    ds = load_pairs(folder)
    assert _ids(ds) == _ids(rows)
    first = ds[0]
    assert first["prompt"][0]["role"] == "user"
    assert first["chosen"][0]["role"] == first["rejected"][0]["role"] == "assistant"
    assert {"delta", "delta_step_coherence", "generator_delta", "chosen_model"} <= set(
        ds.column_names
    )


def test_min_delta_is_pushed_down(
    published: tuple[Path, list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, rows = published
    expected = [r for r in rows if r["delta_step_coherence"] >= 2]
    assert 0 < len(expected) < len(rows)

    # A Python-side filter would go through Dataset.filter: forbid it, then check that the
    # loaded table holds exactly the matching rows (no index mapping over a full table).
    def no_python_filter(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("filtered in Python, not pushed down")

    monkeypatch.setattr(datasets.Dataset, "filter", no_python_filter)
    ds = load_pairs(folder, min_delta=2, dimension="step_coherence")
    assert _ids(ds) == _ids(expected)
    assert ds._indices is None
    assert ds.data.num_rows == len(expected)
    # the same selection by the column name, and with plain datasets as the card shows it
    assert _ids(load_pairs(folder, min_delta=2, dimension="delta_step_coherence")) == _ids(expected)
    plain = datasets.load_dataset(
        str(folder), "pairs", split="train", filters=[("delta_step_coherence", ">=", 2)]
    )
    assert _ids(plain) == _ids(expected) and plain.data.num_rows == len(expected)


def test_aggregate_delta_is_the_default_dimension(published: tuple[Path, list[dict]]) -> None:
    folder, rows = published
    ds = load_pairs(folder, min_delta=1.5)
    assert _ids(ds) == _ids([r for r in rows if r["delta"] >= 1.5])


def test_top_fraction_breaks_ties_by_pair_id(published: tuple[Path, list[dict]]) -> None:
    folder, rows = published
    column = "delta_factuality"
    values = [r[column] for r in rows]
    assert len(set(values)) < len(values)  # integer deltas: plenty of ties
    k = math.ceil(0.3 * len(rows))
    ranked = sorted(rows, key=lambda r: (-r[column], r["pair_id"]))
    assert ranked[k - 1][column] == ranked[k][column]  # the cut falls inside a tie
    ds = load_pairs(folder, dimension="factuality", top_fraction=0.3)
    assert len(ds) == k
    assert _ids(ds) == _ids(ranked[:k])
    stored = pq.read_table(folder / "data/pairs/train-00000-of-00001.parquet", columns=["pair_id"])
    order = stored.column("pair_id").to_pylist()
    assert list(ds["pair_id"]) == [p for p in order if p in _ids(ranked[:k])]  # stored order
    assert list(load_pairs(folder, dimension="factuality", top_fraction=0.3)["pair_id"]) == list(
        ds["pair_id"]
    )
    assert len(load_pairs(folder, top_fraction=1.0)) == len(rows)


def test_top_fraction_after_other_filters(published: tuple[Path, list[dict]]) -> None:
    folder, rows = published
    subset = [r for r in rows if r["rejected_generator"] == "weaker"]
    k = math.ceil(0.5 * len(subset))
    ranked = sorted(subset, key=lambda r: (-r["delta"], r["pair_id"]))[:k]
    ds = load_pairs(folder, generator_pairs=[("strong", "weaker")], top_fraction=0.5)
    assert _ids(ds) == _ids(ranked)


def test_generator_pairs(published: tuple[Path, list[dict]]) -> None:
    folder, rows = published
    ds = load_pairs(folder, generator_pairs=[("strong", "weak")])
    assert _ids(ds) == _ids([r for r in rows if r["rejected_generator"] == "weak"])
    both = load_pairs(folder, generator_pairs=[("strong", "weak"), ("strong", "weaker")])
    assert len(both) == len(rows)
    combined = load_pairs(folder, generator_pairs=[("strong", "weaker")], min_delta=2.0)
    assert _ids(combined) == _ids(
        [r for r in rows if r["rejected_generator"] == "weaker" and r["delta"] >= 2.0]
    )


@pytest.mark.parametrize(
    ("correctness", "keep"),
    [
        ("chosen_correct", lambda r: r["chosen_correct"] is True),
        ("both_correct", lambda r: r["chosen_correct"] is True and r["rejected_correct"] is True),
        ("chosen_only", lambda r: r["chosen_correct"] is True and r["rejected_correct"] is False),
        ("rejected_only", lambda r: r["chosen_correct"] is False and r["rejected_correct"] is True),
        ("both_wrong", lambda r: r["chosen_correct"] is False and r["rejected_correct"] is False),
        ("rejected_incorrect", lambda r: r["rejected_correct"] is False),
    ],
)
def test_correctness(published: tuple[Path, list[dict]], correctness: str, keep: Any) -> None:
    folder, rows = published
    expected = [r for r in rows if keep(r)]
    assert expected
    assert _ids(load_pairs(folder, correctness=correctness)) == _ids(expected)


def test_the_four_correctness_directions_split_every_pair_once(
    published: tuple[Path, list[dict]],
) -> None:
    from prefdelta.loading import CORRECTNESS_DIRECTIONS

    folder, rows = published
    ids = [i for d in CORRECTNESS_DIRECTIONS for i in _ids(load_pairs(folder, correctness=d))]
    assert sorted(ids) == sorted(_ids(rows))


def test_errors_say_what_is_available(published: tuple[Path, list[dict]]) -> None:
    folder, rows = published
    with pytest.raises(PairsLoadError, match=r"available delta columns: .*delta_step_coherence"):
        load_pairs(folder, dimension="elegance", min_delta=1)
    high = max(r["delta_step_coherence"] for r in rows)
    low = min(r["delta_step_coherence"] for r in rows)
    with pytest.raises(
        PairsLoadError,
        match=rf"observed range of delta_step_coherence: {low:g} to {high:g}",
    ):
        load_pairs(folder, dimension="step_coherence", min_delta=high + 1)
    with pytest.raises(PairsLoadError, match=r"present: \('strong', 'weak'\)"):
        load_pairs(folder, generator_pairs=[("weak", "strong")])
    for bad in (0, -0.1, 1.5, "half"):
        with pytest.raises(PairsLoadError, match=r"top_fraction must be a fraction in \(0, 1\]"):
            load_pairs(folder, top_fraction=bad)  # type: ignore[arg-type]
    with pytest.raises(PairsLoadError, match="expected one of: chosen_correct, both_correct"):
        load_pairs(folder, correctness="right")
    with pytest.raises(PairsLoadError, match=r"no split 'test'.*available splits: train"):
        load_pairs(folder, split="test")
    with pytest.raises(PairsLoadError, match="tuples"):
        load_pairs(folder, generator_pairs=["strong vs weak"])  # type: ignore[list-item]


def test_load_from_hub_at_the_recipe_tag(tmp_path: Path, hub: HubServer) -> None:
    build = make_build(tmp_path / "build", n_prompts=40)
    result = publish_build(build, "tester/loading", private=False, test_size=0.25)
    rows = build_pairs(build)
    ds = load_pairs("tester/loading", split="test", revision=result.tag, min_delta=1)
    test_ids = _ids(datasets.load_dataset("tester/loading", "pairs", split="test"))
    assert _ids(ds) == {r["pair_id"] for r in rows if r["pair_id"] in test_ids and r["delta"] >= 1}
    with pytest.raises(PairsLoadError, match="observed range of delta"):
        load_pairs("tester/loading", min_delta=99)


# ----------------------------------------------------------------------------- TRL


CONSUMER = textwrap.dedent(
    """
    import json, sys

    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    folder, model_dir, out_dir = sys.argv[1:4]
    train = load_dataset(
        folder, "pairs", split="train", filters=[("delta_step_coherence", ">=", 1)]
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ref_model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = DPOConfig(
        output_dir=out_dir,
        use_cpu=True,
        bf16=False,
        max_length=128,
        per_device_train_batch_size=2,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
    )
    trainer = DPOTrainer(
        model=model, ref_model=ref_model, args=args, train_dataset=train,
        processing_class=tokenizer,
    )
    result = trainer.train()
    print("RESULT " + json.dumps({
        "rows": len(train),
        "min_delta": min(train["delta_step_coherence"]),
        "steps": result.global_step,
        "loss": result.training_loss,
        "prefdelta_imported": "prefdelta" in sys.modules,
    }))
    """
)


@pytest.mark.slow
def test_trl_dpo_consumes_published_folder_without_prefdelta(
    published: tuple[Path, list[dict]],
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder, rows = published
    script = tmp_path / "consume.py"
    script.write_text(CONSUMER)
    env = {
        **os.environ,
        "HF_DATASETS_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(folder), str(tiny_model_dir), str(tmp_path / "dpo")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["prefdelta_imported"] is False
    assert result["rows"] == sum(r["delta_step_coherence"] >= 1 for r in rows)
    assert result["min_delta"] >= 1
    assert result["steps"] == 2 and math.isfinite(result["loss"])


def test_pairs_without_deltas_are_loaded_but_never_selected_by_a_delta(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", n_prompts=40, failure_rate=0.3, unjudged="keep")
    out = tmp_path / "published"
    publish_build(build, out)
    rows = build_pairs(build)
    unscored = {r["pair_id"] for r in rows if r["delta"] is None}
    assert unscored  # the judge failed on some traces: their generator pairs are still there
    assert _ids(load_pairs(out)) == _ids(rows)
    assert not _ids(load_pairs(out, min_delta=-100)) & unscored
    scored = [r for r in rows if r["delta"] is not None]
    top = load_pairs(out, top_fraction=0.5)
    assert len(top) == math.ceil(0.5 * len(scored))
    assert not _ids(top) & unscored


def test_top_fraction_of_unjudged_pairs_is_an_error_not_an_empty_split(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", n_prompts=6, failure_rate=1.0, unjudged="keep")
    out = tmp_path / "published"
    publish_build(build, out)
    assert len(load_pairs(out)) == len(build_pairs(build)) > 0  # generator pairs, no deltas
    with pytest.raises(PairsLoadError, match=r"none of the \d+ selected pairs .* has a delta_"):
        load_pairs(out, dimension="step_coherence", top_fraction=0.3)


def test_top_fraction_without_a_single_scored_pair_says_what_to_do(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build", n_prompts=6, failure_rate=1.0, unjudged="keep")
    publish_build(build, tmp_path / "published", test_size=0)
    with pytest.raises(PairsLoadError) as exc:
        load_pairs(tmp_path / "published", dimension="step_coherence", top_fraction=0.5)
    message = str(exc.value)
    assert "none of the 12 selected pairs" in message
    assert message.endswith("(the build's summary.json counts why each trace went unscored)")


def test_numbers_must_be_numbers_not_bools_or_strings(published: tuple[Path, list[dict]]) -> None:
    """``True`` is an int to Python: it must not pass as top_fraction 1.0 (every pair) or as
    min_delta 1; the error is a TypeError naming the argument (and a PairsLoadError)."""
    folder, _ = published
    for name, bad, kind in (
        ("top_fraction", True, "bool"),
        ("top_fraction", False, "bool"),
        ("top_fraction", "0.5", "str"),
        ("min_delta", True, "bool"),
        ("min_delta", "1", "str"),
        ("min_delta", float("nan"), "float"),
    ):
        pattern = rf"^{name} must be .*, got {re.escape(repr(bad))} \(a {kind}\); pass a number"
        with pytest.raises(TypeError, match=pattern) as exc:
            load_pairs(folder, **{name: bad})
        assert isinstance(exc.value, PairsLoadError)


def test_generator_pairs_is_a_list_never_a_bare_string(published: tuple[Path, list[dict]]) -> None:
    folder, _ = published
    with pytest.raises(
        TypeError, match=r"got the string 'strong:weak'; for one pair write \['strong:weak'\]"
    ):
        load_pairs(folder, generator_pairs="strong:weak")  # type: ignore[arg-type]
    # a forgotten outer bracket around one tuple: say how to write that pair
    with pytest.raises(TypeError, match=r"for that one pair write \[\('strong', 'weak'\)\]"):
        load_pairs(folder, generator_pairs=("strong", "weak"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got \{'strong': 'weak'\} \(a dict\)"):
        load_pairs(folder, generator_pairs={"strong": "weak"})  # type: ignore[arg-type]
    # each item may be a tuple or a `chosen:rejected` string: the same selection
    as_tuples = load_pairs(folder, generator_pairs=[("strong", "weak")])
    assert _ids(load_pairs(folder, generator_pairs=["strong:weak"])) == _ids(as_tuples)
