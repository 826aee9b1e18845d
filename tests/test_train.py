"""``prefdelta train``: TRL DPO and KTO on delta-filtered splits of a published folder.

Real trainers on a tiny random Llama (CPU, a few steps): the selection reaches the
trainer, the loss moves, the reference log-prob cache is reused across differently
filtered runs (reference forwards are counted), and errors are one line.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from trl import DPOConfig, DPOTrainer, ModelConfig
from typer.testing import CliRunner

from prefdelta.cli import app
from prefdelta.push import publish_build
from prefdelta.train import dpo, kto
from prefdelta.train.configs import (
    TRAINERS,
    DataArguments,
    KTODataArguments,
    TrainConfigError,
    config_argv,
    parse_config,
)
from prefdelta.train.data import (
    KTO_RATIO_RANGE,
    TrainDataError,
    balanced_weights,
    dataset_source,
    load_dpo_selection,
    load_kto_selection,
)
from prefdelta.train.ref_cache import RefCacheLocation
from prefdelta.train.run import REGISTRY
from support.build_fixtures import make_build
from support.model_fixtures import tiny_model_dir  # noqa: F401  (a fixture)
from support.train_fixtures import BATCH, dpo_config, kto_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published folder (train and test splits) from a synthetic build."""
    root = tmp_path_factory.mktemp("train-data")
    build = make_build(root / "build", n_prompts=24, seed=3)
    publish_build(build, root / "published", test_size=0.25)
    return root / "published"


@pytest.fixture
def fresh(published: Path, tmp_path: Path) -> Path:
    """A private copy of the published folder: its reference log-prob cache starts empty
    (the cache is keyed by the folder's path)."""
    copy = tmp_path / "published"
    shutil.copytree(published, copy)
    return copy


def _model(path: Path) -> ModelConfig:
    return ModelConfig(model_name_or_path=str(path))


# --------------------------------------------------------------------------- DPO


@pytest.fixture(scope="module")
def dpo_run(published: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: F811
    out = tmp_path_factory.mktemp("dpo-run")
    args = DataArguments(dataset=str(published), dimension="step_coherence", top_fraction=0.5)
    return dpo.main(args, dpo_config(out / "model"), _model(tiny_model_dir))


def test_dpo_trains_on_the_filtered_pairs_and_the_loss_moves(published: Path, dpo_run: Any) -> None:
    n_train = pq.ParquetFile(next((published / "data/pairs").glob("train-*"))).metadata.num_rows
    assert dpo_run.counts["pairs_available"] == n_train
    assert dpo_run.counts["pairs_selected"] == math.ceil(0.5 * n_train)
    assert len(dpo_run.losses) == 4
    assert dpo_run.losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference
    assert dpo_run.losses[-1] < dpo_run.losses[0] - 0.01
    assert (dpo_run.output_dir / "model.safetensors").is_file()


def test_model_card_records_base_data_filter_counts_and_config(
    published: Path,
    dpo_run: Any,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    card = (dpo_run.output_dir / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert {"prefdelta", "trl", "dpo"} <= set(meta["tags"])
    assert f"`{tiny_model_dir}`" in card  # base model
    assert f"| dataset | `{published.resolve()}` (local folder) |" in card
    assert "| revision | `sha256:" in card  # the folder's content, pinned
    assert "| top_fraction | `0.5` |" in card and "| dimension | `step_coherence` |" in card
    n = dpo_run.counts
    assert f"| pairs | {n['pairs_selected']} of {n['pairs_available']} (" in card
    for pair, count in n["by_generator_pair"].items():
        assert f"| {pair} | {count} |" in card
    config = yaml.safe_load(card.split("```yaml")[1].split("```")[0])
    assert config["learning_rate"] == 5e-3 and config["max_steps"] == 4
    assert config["precompute_ref_log_probs"] is True
    assert "hub_token" not in config and "output_dir" not in config
    assert "## Reference log-probs" in card and "## Framework versions" in card


def test_dpo_batches_pairs_of_similar_length(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from transformers.trainer_pt_utils import LengthGroupedSampler

    sel = load_dpo_selection(DataArguments(dataset=str(published)))
    trainer = dpo.PrefDeltaDPOTrainer(
        model=str(tiny_model_dir),
        args=dpo_config(tmp_path),
        train_dataset=sel.dataset,
        length_grouping=True,
    )
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler)
    assert len(trainer._train_lengths) == len(sel.dataset)


# --------------------------------------------------------------------------- reference cache


class _RefForwardCounter:
    """Counts backbone forwards run without gradients: the reference passes.

    TRL's fused LM head calls the backbone (``LlamaModel``) directly, so that is what is
    wrapped; training forwards run with gradients and are not counted.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from transformers.models.llama.modeling_llama import LlamaModel

        self.calls = 0
        original = LlamaModel.forward

        def counting(module: Any, *args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                self.calls += 1
            return original(module, *args, **kwargs)

        monkeypatch.setattr(LlamaModel, "forward", counting)

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


def test_reference_logps_are_computed_once_and_reused_by_other_filters(
    fresh: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = _RefForwardCounter(monkeypatch)
    model = _model(tiny_model_dir)

    def run(name: str, **select: Any) -> Any:
        args = DataArguments(dataset=str(fresh), dimension="step_coherence", **select)
        return dpo.main(args, dpo_config(tmp_path / name, max_steps=2), model)

    files_before = sorted(p.relative_to(fresh) for p in fresh.rglob("*"))
    first = run("top50", top_fraction=0.5)
    rows = first.counts["pairs_selected"]
    assert counter.take() == math.ceil(rows / BATCH)  # one reference pass, batched
    assert first.ref_cache["sequences_cached"] == 0
    location = RefCacheLocation.for_dataset(dataset_source(str(fresh), None))
    assert list(location.root.glob("*/part-*.parquet"))
    # the cache is a folder of its own: training wrote nothing into the dataset folder
    assert not location.root.is_relative_to(fresh)
    assert sorted(p.relative_to(fresh) for p in fresh.rglob("*")) == files_before

    # top 30% is inside top 50% (same ranking): every pair is cached, no reference forward
    # at all, neither before training nor during it
    second = run("top30", top_fraction=0.3)
    assert counter.take() == 0
    assert second.ref_cache["sequences_computed"] == 0
    assert second.ref_cache["sequences_cached"] == 2 * second.counts["pairs_selected"]

    # every pair: only the ones never seen are computed
    third = run("all")
    missing = third.counts["pairs_selected"] - rows
    assert counter.take() == math.ceil(missing / BATCH)

    # the cached values are TRL's own: plain DPOTrainer with its precompute agrees
    sel = load_dpo_selection(DataArguments(dataset=str(fresh)))
    plain = DPOTrainer(
        model=str(tiny_model_dir),
        args=dpo_config(tmp_path / "plain", precompute_ref_log_probs=True),
        train_dataset=sel.dataset,
    )
    ours = dpo.PrefDeltaDPOTrainer(
        model=str(tiny_model_dir),
        args=dpo_config(tmp_path / "ours"),
        train_dataset=sel.dataset,
        ref_cache=RefCacheLocation.for_dataset(sel.source),
    )
    assert counter.take() == math.ceil(len(sel.dataset) / BATCH)  # TRL's pass only
    for column in ("ref_chosen_logps", "ref_rejected_logps"):
        theirs = dict(zip(plain.train_dataset["pair_id"], plain.train_dataset[column], strict=True))
        mine = dict(zip(ours.train_dataset["pair_id"], ours.train_dataset[column], strict=True))
        assert mine.keys() == theirs.keys()
        assert torch.allclose(
            torch.tensor([mine[k] for k in theirs]), torch.tensor(list(theirs.values())), atol=1e-4
        )


def test_a_rerun_from_cached_reference_logps_trains_exactly_as_the_first_run(
    fresh: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    # computing reference log-probs iterates a data loader, which draws from torch's
    # random state; a cached rerun must still shuffle its batches the same way
    def run(name: str) -> Any:
        args = DataArguments(dataset=str(fresh), dimension="step_coherence", top_fraction=0.5)
        return dpo.main(args, dpo_config(tmp_path / name), _model(tiny_model_dir))

    first, rerun = run("first"), run("rerun")
    assert first.ref_cache["sequences_computed"] > 0 and rerun.ref_cache["sequences_computed"] == 0
    assert rerun.losses == pytest.approx(first.losses, rel=1e-6, abs=1e-7)


# --------------------------------------------------------------------------- KTO


def test_kto_from_pairs_trains_and_the_loss_moves(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    args = KTODataArguments(dataset=str(published), min_delta=1)
    result = kto.main(args, kto_config(tmp_path / "kto"), _model(tiny_model_dir))
    c = result.counts
    # each chosen trace once, although it recurs in the pairs of both rejected generators
    assert c["desirable"] <= c["pairs_selected"] == c["undesirable"]
    assert result.losses[-1] < result.losses[0]
    assert "| desirable / undesirable |" in (result.output_dir / "README.md").read_text()


def test_kto_from_traces_uses_score_thresholds_and_balances_weights(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    args = KTODataArguments(
        dataset=str(published),
        kto_source="traces",
        dimension="step_coherence",
        desirable_min_score=4,
        undesirable_max_score=2,
    )
    with caplog.at_level("WARNING"):
        result = kto.main(args, kto_config(tmp_path / "kto"), _model(tiny_model_dir))
    traces = pq.read_table(next((published / "data/traces").glob("*.parquet"))).to_pylist()
    test_ids = set(
        pq.read_table(next((published / "data/pairs").glob("test-*")))
        .column("prompt_id")
        .to_pylist()
    )
    scores = [
        t["scores"]["step_coherence"]
        for t in traces
        if t["judge_status"] == "ok" and t["prompt_id"] not in test_ids
    ]
    n_d, n_u = sum(s >= 4 for s in scores), sum(s <= 2 for s in scores)
    assert (result.counts["desirable"], result.counts["undesirable"]) == (n_d, n_u)
    assert n_d != n_u  # the weights have something to balance
    dw, uw = result.weights
    assert KTO_RATIO_RANGE[0] <= dw * n_d / (uw * n_u) <= KTO_RATIO_RANGE[1]
    assert "don't seem to be in an ideal range" not in caplog.text  # TRL's own check agrees
    assert result.losses[-1] != result.losses[0]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 20_000), st.integers(1, 20_000))
def test_balanced_weights_pass_trls_check(n_d: int, n_u: int) -> None:
    dw, uw = balanced_weights(n_d, n_u)
    assert min(dw, uw) == 1.0
    assert KTO_RATIO_RANGE[0] <= dw * n_d / (uw * n_u) <= KTO_RATIO_RANGE[1]
    if n_d != n_u:  # TRL 1.16's test (kto_trainer._prepare_dataset), with its rounding
        des = round(n_u * uw / n_d, 2) <= dw <= round(n_u * uw / n_d * 1.33, 2)
        und = round(n_d * dw / n_u / 1.33, 2) <= uw <= round(n_d * dw / n_u, 2)
        assert des or und


# --------------------------------------------------------------------------- CLI and errors


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _base_yaml(dataset: Path, model: Path, out: Path, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": str(dataset),
        "model_name_or_path": str(model),
        "output_dir": str(out),
        "use_cpu": True,
        "bf16": False,
        "max_steps": 2,
        "per_device_train_batch_size": BATCH,
        "save_strategy": "no",
        "report_to": "none",
        "max_length": 256,
        **extra,
    }


def test_cli_train_reads_the_trainer_from_the_config(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = _write(
        tmp_path / "kto.yaml",
        _base_yaml(published, tiny_model_dir, tmp_path / "out", trainer="kto", top_fraction=0.5),
    )
    result = CliRunner().invoke(app, ["train", str(cfg), "--set", "max_steps=1"])
    assert result.exit_code == 0, result.output
    # KTO trains on unpaired examples: counted as such, not as the pairs they came from
    summary = re.search(
        r"trained: .* \((\d+) examples \((\d+) desirable, (\d+) undesirable\) from (\d+) pairs",
        " ".join(result.output.split()),
    )
    assert summary, result.output
    n, desirable, undesirable, pairs = map(int, summary.groups())
    assert n == desirable + undesirable and n > pairs
    card = (tmp_path / "out" / "README.md").read_text()
    assert "- kto" in card and "max_steps: 1" in card


def test_cli_train_reads_its_config_file_once(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trainer, the key and value checks and TRL's parser all see one reading of the
    file: a file edited mid-run cannot give them different configs."""
    cfg = _write(
        tmp_path / "dpo.yaml",
        _base_yaml(published, tiny_model_dir, tmp_path / "out", trainer="dpo", top_fraction=0.5),
    )
    text = cfg.read_text()
    reads = []
    safe_load = yaml.safe_load

    def counting(stream: Any) -> Any:
        content = stream.read() if hasattr(stream, "read") else stream
        if content == text:
            reads.append(content)
        return safe_load(content)

    monkeypatch.setattr(yaml, "safe_load", counting)
    result = CliRunner().invoke(app, ["train", str(cfg), "--set", "max_steps=1"])
    assert result.exit_code == 0, result.output
    assert len(reads) == 1


def test_cli_filter_that_leaves_nothing_is_one_line(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = _write(
        tmp_path / "c.yaml",
        _base_yaml(published, tiny_model_dir, tmp_path / "out", trainer="dpo", min_delta=99),
    )
    result = CliRunner().invoke(app, ["train", str(cfg)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "no pairs left" in lines[0] and "delta >= 99" in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_dataset_lacking_a_column_names_it_and_what_has_it(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(published, broken)
    for f in (broken / "data/pairs").glob("*.parquet"):
        table = pq.read_table(f)
        pq.write_table(table.drop_columns(["chosen_generator"]), f)
    cfg = _write(
        tmp_path / "c.yaml",
        _base_yaml(broken, tiny_model_dir, tmp_path / "out", generator_pairs=["strong:weak"]),
    )
    result = CliRunner().invoke(app, ["train", str(cfg), "--trainer", "dpo"])
    assert result.exit_code == 1
    assert "has no column 'chosen_generator', needed by generator_pairs" in result.output
    assert "`pairs` config that `prefdelta publish` writes has it" in result.output

    shutil.rmtree(broken / "data/traces")
    cfg = _write(
        tmp_path / "k.yaml",
        _base_yaml(
            broken,
            tiny_model_dir,
            tmp_path / "out",
            trainer="kto",
            kto_source="traces",
            desirable_min_score=4,
            undesirable_max_score=2,
        ),
    )
    result = CliRunner().invoke(app, ["train", str(cfg)])
    assert result.exit_code == 1
    assert "has no `traces` config" in result.output and "kto_source: pairs" in result.output


def _one_line_error(result: Any) -> str:
    """A user error as the CLI must print it: exit 1, one `error:` line on stderr, no
    traceback and no argparse usage."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert "Traceback" not in result.output and "usage:" not in result.output.lower()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_cli_a_wrong_value_names_the_file_the_key_and_what_is_expected(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    base = _base_yaml(published, tiny_model_dir, tmp_path / "out", trainer="dpo")
    cfg = _write(tmp_path / "c.yaml", {**base, "learning_rate": [1e-6, 2e-6]})
    line = _one_line_error(CliRunner().invoke(app, ["train", str(cfg)]))
    assert line == (
        f"error: {cfg}: learning_rate: expected a number, got [1e-06, 2e-06]; "
        "give e.g. 1e-06 (its default) or leave it out"
    )
    # YAML reads `no` as false: the line says to quote it
    cfg = _write(tmp_path / "c.yaml", {**base, "save_strategy": False})
    line = _one_line_error(CliRunner().invoke(app, ["train", str(cfg)]))
    assert line.startswith(
        f"error: {cfg}: save_strategy: expected one of no, steps, epoch, best, got False (YAML"
    )
    # the same check for --set, where argparse printed its whole usage
    cfg = _write(tmp_path / "c.yaml", base)
    line = _one_line_error(
        CliRunner().invoke(app, ["train", str(cfg), "--set", "learning_rate=[1,2]"])
    )
    assert line.startswith("error: command line: learning_rate: expected a number, got '[1,2]'")
    # a choice of transformers' (an enum that also takes its values as strings) names them
    line = _one_line_error(
        CliRunner().invoke(app, ["train", str(cfg), "--set", "lr_scheduler_type=nonsense"])
    )
    assert line.startswith(
        "error: command line: lr_scheduler_type: expected one of linear, cosine, "
    )
    assert line.endswith(", got 'nonsense'; give e.g. 'linear' (its default) or leave it out")
    assert not (tmp_path / "out").exists()


def test_cli_a_model_or_output_folder_that_cannot_be_used_is_one_line(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
    hub: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked before the data is loaded, each as one line (transformers' tracebacks were
    40 to 90 lines)."""
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    base = _base_yaml(published, tiny_model_dir, tmp_path / "out", trainer="dpo")

    def run(**over: Any) -> str:
        cfg = _write(tmp_path / "c.yaml", {**base, **over})
        return _one_line_error(CliRunner().invoke(app, ["train", str(cfg)]))

    cfg = tmp_path / "c.yaml"
    assert run(model_name_or_path="./no-model") == (
        f"error: {cfg}: model_name_or_path: no such folder ./no-model (relative to {tmp_path}); "
        "give a model folder, a .gguf file or a Hub id (org/name)"
    )
    line = run(model_name_or_path="tester/no-such-model")  # the loopback Hub has none
    assert f"{cfg}: model_name_or_path: no model tester/no-such-model on the Hub" in line
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    line = run(model_name_or_path="tester/no-such-model")
    assert line == (
        f"error: {cfg}: model_name_or_path: tester/no-such-model is not in the local Hub "
        f"cache and HF_HUB_OFFLINE is set ({constants.ENDPOINT}); download it once online "
        "(`hf download tester/no-such-model`) or give a local model folder"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    (tmp_path / "a-file").write_text("not a folder")
    assert run(output_dir=str(tmp_path / "a-file")) == (
        f"error: {cfg}: output_dir: {tmp_path / 'a-file'} is a file, not a folder; give a "
        "folder (it is created if missing) for the trained model"
    )
    assert run(output_dir=str(tmp_path / "a-file" / "out")).startswith(
        f"error: {cfg}: output_dir: cannot create {tmp_path / 'a-file' / 'out'}: "
    )


def test_cli_a_folder_or_a_missing_key_as_the_config_is_one_line(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    line = _one_line_error(CliRunner().invoke(app, ["train", str(tmp_path)]))
    assert line.startswith(f"error: {tmp_path}: is a folder; give the training config file")
    # a config whose name is not *.yaml is still read as the config, not as an argument
    base = _base_yaml(published, tiny_model_dir, tmp_path / "out", trainer="dpo")
    del base["dataset"]
    cfg = _write(tmp_path / "train.conf", base)
    line = _one_line_error(CliRunner().invoke(app, ["train", str(cfg)]))
    assert line.startswith(f"error: {cfg}: the following arguments are required: --dataset")


def test_one_registry_names_every_trainer_and_its_script() -> None:
    """`prefdelta train` and the sweep dispatch through it; `trainer:` keys are checked
    against configs.TRAINERS, so the two name the same trainers."""
    assert tuple(REGISTRY) == TRAINERS
    for name, kind in REGISTRY.items():
        script = kind.script()
        assert kind.name == name and script.__name__ == f"prefdelta.train.{name}"
        assert script.DATACLASSES[0] is kind.data_arguments and callable(script.main)


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    types = (DataArguments, DPOConfig, ModelConfig)
    cfg = _write(tmp_path / "c.yaml", {"dataset": "x", "output_dir": "o", "max_step": 3})
    with pytest.raises(
        TrainConfigError, match=r"unknown key 'max_step' \(did you mean 'max_steps'\?\)"
    ):
        parse_config(types, [str(cfg)])
    cfg = _write(tmp_path / "c.yaml", {"dataset": "x", "output_dir": "o", "top_fraction": 3})
    with pytest.raises(TrainConfigError, match=r"top_fraction must be a fraction in \(0, 1\]"):
        parse_config(types, [str(cfg)])
    with pytest.raises(TrainConfigError, match="no such config file"):
        parse_config(types, [str(tmp_path / "missing.yaml")])
    with pytest.raises(TrainConfigError, match="kto_source traces needs"):
        KTODataArguments(dataset="x", kto_source="traces")
    assert config_argv(["c.yaml", "--max_steps", "2"]) == ["--config", "c.yaml", "--max_steps", "2"]
    # a typo on the command line (`prefdelta train --set`) too, even a prefix argparse
    # would have taken for another key
    cfg = _write(tmp_path / "c.yaml", {"dataset": "x", "output_dir": "o"})
    for typo, match in (("max_step", "max_steps"), ("learning_rat", "learning_rate")):
        with pytest.raises(
            TrainConfigError,
            match=rf"command line: unknown key '{typo}' \(did you mean '{match}'\?\)",
        ):
            parse_config(types, [str(cfg), f"--{typo}", "2"])


def test_num_pairs_draws_that_many_from_what_the_filters_keep(published: Path) -> None:
    """The correctness sweep's sizing: exactly ``num_pairs``, seeded, within the filter."""
    both = {"dataset": str(published), "correctness": "chosen_only"}
    pool = load_dpo_selection(DataArguments(**both)).dataset
    assert len(pool) > 3
    first = load_dpo_selection(DataArguments(**both, num_pairs=3, selection_seed=1)).dataset
    again = load_dpo_selection(DataArguments(**both, num_pairs=3, selection_seed=1)).dataset
    assert len(first) == 3 and first["pair_id"] == again["pair_id"]
    assert set(first["pair_id"]) <= set(pool["pair_id"])
    with pytest.raises(TrainDataError, match=rf"num_pairs: {len(pool) + 1} asked, but the "):
        load_dpo_selection(DataArguments(**both, num_pairs=len(pool) + 1))
    with pytest.raises(
        TrainConfigError, match="give one of top_fraction, random_fraction, num_pairs"
    ):
        DataArguments(dataset="x", num_pairs=3, top_fraction=0.5)
    for bad in (0, -2, True, 2.5):
        with pytest.raises(TrainConfigError, match="num_pairs must be a positive integer"):
            DataArguments(dataset="x", num_pairs=bad)  # type: ignore[arg-type]


def test_a_bool_is_not_a_number_in_the_selection() -> None:
    """`top_fraction: true` would have trained on every pair (True == 1)."""
    for name in ("top_fraction", "random_fraction", "min_delta"):
        with pytest.raises(TrainConfigError, match=rf"^{name} must be a number, got True$"):
            DataArguments(dataset="x", **{name: True})


def test_generator_pairs_accept_yaml_spellings(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path / "c.yaml",
        {
            "dataset": "x",
            "output_dir": "o",
            "use_cpu": True,
            "bf16": False,
            "generator_pairs": ["a:b", ["c", "d"], {"e": "f"}],
        },
    )
    args, _, _ = parse_config((DataArguments, DPOConfig, ModelConfig), [str(cfg)])
    assert args.pair_tuples == [("a", "b"), ("c", "d"), ("e", "f")]


@pytest.mark.slow
def test_accelerate_launch_runs_the_dpo_script(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = _write(
        tmp_path / "c.yaml",
        _base_yaml(published, tiny_model_dir, tmp_path / "out", top_fraction=0.5),
    )
    accelerate = Path(sys.executable).parent / "accelerate"
    proc = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--cpu",
            "--num_processes",
            "1",
            "-m",
            "prefdelta.train.dpo",
            str(cfg),
            "--max_steps",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert "max_steps: 1" in (tmp_path / "out" / "README.md").read_text()


def test_push_to_hub_uploads_the_model_with_our_card(
    hub: Any,
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from huggingface_hub import hf_hub_download

    args = DataArguments(dataset=str(published), top_fraction=0.5)
    config = dpo_config(
        tmp_path / "out", max_steps=1, push_to_hub=True, hub_model_id="tester/tiny-dpo"
    )
    dpo.main(args, config, _model(tiny_model_dir))
    card = Path(hf_hub_download("tester/tiny-dpo", "README.md")).read_text()
    assert "| top_fraction | `0.5` |" in card and "## Reference log-probs" in card
    assert hf_hub_download("tester/tiny-dpo", "model.safetensors")


def test_trains_from_a_hub_dataset_pinned_to_a_commit(
    hub: Any,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFDELTA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PREFDELTA_REF_CACHE")  # the default place: ref_logps in that cache
    build = make_build(tmp_path / "build", n_prompts=12, seed=4)
    pushed = publish_build(build, "tester/pairs")
    args = DataArguments(dataset="tester/pairs", revision=pushed.commit, top_fraction=0.5)
    result = dpo.main(args, dpo_config(tmp_path / "out", max_steps=1), _model(tiny_model_dir))
    card = (result.output_dir / "README.md").read_text()
    assert f"| revision | `{pushed.commit}` (requested `{pushed.commit}`) |" in card
    assert "datasets:\n- tester/pairs" in card
    # a Hub dataset's reference log-probs live in the local cache, by repo
    assert list((tmp_path / "cache" / "ref_logps" / "tester--pairs").glob("*/part-*.parquet"))


def test_a_republished_folder_is_read_afresh(tmp_path: Path) -> None:
    """datasets 5.2.0 caches a local folder's configs by its name: a new build published to
    the same folder must not train on the rows cached first (pairs, and KTO's traces)."""
    folder = tmp_path / "published"
    kto_args = dict(
        kto_source="traces", dimension="aggregate", desirable_min_score=3.5, undesirable_max_score=3
    )
    publish_build(make_build(tmp_path / "b1", n_prompts=24, seed=3), folder)
    first = load_dpo_selection(DataArguments(dataset=str(folder)))
    first_kto = load_kto_selection(KTODataArguments(dataset=str(folder), **kto_args))
    shutil.rmtree(folder)
    publish_build(make_build(tmp_path / "b2", n_prompts=10, seed=4), folder)
    second = load_dpo_selection(DataArguments(dataset=str(folder)))
    expected = pq.read_table(next((folder / "data/pairs").glob("train-*"))).column("pair_id")
    assert sorted(second.dataset["pair_id"]) == sorted(expected.to_pylist())
    assert second.source.resolved != first.source.resolved
    second_kto = load_kto_selection(KTODataArguments(dataset=str(folder), **kto_args))
    traces = pq.read_table(next((folder / "data/traces").glob("*.parquet")))
    assert second_kto.counts["traces_available"] == traces.num_rows
    assert first_kto.counts["traces_available"] != traces.num_rows


def test_a_dataset_that_is_neither_a_folder_nor_on_the_hub_says_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainDataError) as exc:
        dataset_source("outputs/not-here", None)
    message = str(exc.value)
    assert message.startswith(
        f"dataset: no local folder outputs/not-here (relative to the current directory {tmp_path})"
    )
    assert "cannot resolve outputs/not-here@main on the Hub" in message


def test_a_branch_that_moves_mid_selection_changes_neither_counts_nor_rows(
    hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One selection resolves the Hub branch once, to a commit: its column check, its
    count and its rows all read that commit, even when main moves right after (a new
    publish). The pairs files are listed once."""
    from huggingface_hub import HfApi

    from prefdelta import loading
    from prefdelta.train import data as train_data

    first = publish_build(make_build(tmp_path / "b1", n_prompts=12, seed=4), "tester/moving")
    resolve = train_data.dataset_source

    def resolve_then_move(ref: str, revision: str | None) -> Any:
        source = resolve(ref, revision)
        publish_build(make_build(tmp_path / "b2", n_prompts=20, seed=5), "tester/moving")
        return source

    listed: list[str | None] = []
    list_files = HfApi.list_repo_files

    def counting(self: HfApi, *args: Any, **kwargs: Any) -> list[str]:
        listed.append(kwargs.get("revision"))
        return list_files(self, *args, **kwargs)

    monkeypatch.setattr(train_data, "dataset_source", resolve_then_move)
    monkeypatch.setattr(HfApi, "list_repo_files", counting)
    selection = train_data.load_dpo_selection(DataArguments(dataset="tester/moving"))

    assert selection.source.resolved == first.commit
    assert listed == [first.commit]
    at_first = loading.load_pairs("tester/moving", revision=first.commit)["pair_id"]
    at_main = loading.load_pairs("tester/moving")["pair_id"]
    assert len(at_main) != len(at_first)  # the branch really moved to other rows
    assert selection.counts["pairs_available"] == len(at_first)
    assert sorted(selection.dataset["pair_id"]) == sorted(at_first)
