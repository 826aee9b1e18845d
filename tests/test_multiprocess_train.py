"""Training on several processes (what several GPUs run), proven on CPU with gloo.

``accelerate launch --multi_gpu --num_processes 2`` on a machine without a GPU starts two
processes that train on the CPU (the training config's ``use_cpu: true``: gloo). Note that
``accelerate launch --cpu --num_processes 2`` would start one process: accelerate's CPU
launcher leaves more than one to MPI. Each run writes ``prefdelta-run.json``, which says how
many processes ran and how many reference forwards each ran.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefdelta.push import publish_build
from prefdelta.train.common import RUN_RECORD
from prefdelta.train.run import run_config
from support.build_fixtures import make_build
from support.model_fixtures import tiny_model_dir  # noqa: F401  (a fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning"),
]
ROOT = Path(__file__).parent.parent
# The two-process loss against the one-process loss with the same global batch. Observed:
# within 2e-6 (gloo's all-reduce of the gradients sums in another order than one batch).
LOSS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mp-data")
    build = make_build(root / "build", n_prompts=24, seed=3)
    publish_build(build, root / "published", test_size=0.25)
    return root / "published"


def _config(path: Path, dataset: Path, model: Path, **keys: Any) -> Path:
    config = {
        "dataset": str(dataset),
        "model_name_or_path": str(model),
        "output_dir": str(path.parent / "out"),
        "ref_cache_dir": str(path.parent / "ref_cache"),  # starts empty: the pass runs
        "use_cpu": True,
        "bf16": False,
        "max_steps": 4,
        "learning_rate": 5e-3,
        "save_strategy": "no",
        "report_to": "none",
        "max_length": 256,
        "logging_steps": 1,
        "seed": 0,
        "dataloader_pin_memory": False,
        **keys,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _launch(*args: str) -> subprocess.CompletedProcess[str]:
    """``accelerate launch ARGS`` from this environment; its output comes with any failure."""
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.run(
        [str(accelerate), "launch", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    )


def _record(config: Path) -> dict[str, Any]:
    return json.loads((config.parent / "out" / RUN_RECORD).read_text())


def _cache_rows(config: Path) -> tuple[int, dict[bytes, float]]:
    import pyarrow.parquet as pq

    shards = sorted((config.parent / "ref_cache").rglob("part-*.parquet"))
    values: dict[bytes, float] = {}
    for shard in shards:
        t = pq.read_table(shard)
        values.update(zip(t.column("key").to_pylist(), t.column("logp").to_pylist(), strict=True))
    return len(shards), values


def _one_process(tmp_path: Path, published: Path, model: Path, **keys: Any) -> dict[str, Any]:
    """The same run in one process, twice the per-device batch: the same global batch."""
    cfg = _config(tmp_path / "one" / "c.yaml", published, model, **keys)
    run_config(cfg)
    return _record(cfg)


def test_dpo_on_two_processes_matches_one_process_and_shares_one_reference_pass(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    two = _config(
        tmp_path / "two" / "c.yaml",
        published,
        tiny_model_dir,
        trainer="dpo",
        per_device_train_batch_size=1,
    )
    _ok(_launch("--multi_gpu", "--num_processes", "2", "-m", "prefdelta.train.dpo", str(two)))
    multi = _record(two)
    single = _one_process(
        tmp_path, published, tiny_model_dir, trainer="dpo", per_device_train_batch_size=2
    )
    assert multi["num_processes"] == 2 and single["num_processes"] == 1
    assert len(multi["losses"]) == len(single["losses"]) == 4
    assert multi["losses"] == pytest.approx(single["losses"], abs=LOSS_TOLERANCE)
    assert multi["train_loss"] == pytest.approx(single["train_loss"], abs=LOSS_TOLERANCE)

    # one reference pass, shared: each process scored half of the rows (a batch of one
    # each; one process alone would run a forward per row) ...
    rows = multi["counts"]["pairs_selected"]
    assert multi["ref_cache"]["forwards_per_process"] == [math.ceil(rows / 2)] * 2
    assert single["ref_cache"]["forwards_per_process"] == [math.ceil(rows / 2)]  # batch 2
    # ... and the main process stored every sequence once, the values of one process alone
    assert multi["ref_cache"]["sequences_computed"] == single["ref_cache"]["sequences_computed"]
    shards, values = _cache_rows(two)
    _, alone = _cache_rows(tmp_path / "one" / "c.yaml")
    assert shards == 1 and len(values) == multi["ref_cache"]["sequences_computed"]
    assert values.keys() == alone.keys()
    assert max(abs(values[k] - alone[k]) for k in values) < 1e-4


def test_kto_runs_on_two_processes(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = _config(
        tmp_path / "kto" / "c.yaml",
        published,
        tiny_model_dir,
        trainer="kto",
        per_device_train_batch_size=2,  # KTO's KL term needs two examples per batch
        max_steps=2,
    )
    _ok(_launch("--multi_gpu", "--num_processes", "2", "-m", "prefdelta.train.kto", str(cfg)))
    record = _record(cfg)
    assert record["num_processes"] == 2 and len(record["losses"]) == 2
    assert all(math.isfinite(x) for x in record["losses"])
    examples = record["counts"]["desirable"] + record["counts"]["undesirable"]
    forwards = record["ref_cache"]["forwards_per_process"]
    assert len(forwards) == 2 and sum(forwards) == 2 * math.ceil(examples / 4)
    assert (cfg.parent / "out" / "README.md").is_file()


def test_fsdp_on_two_processes_with_the_shipped_config(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """recipes/accelerate/fsdp.yaml as shipped (bf16 mixed precision set aside: CPU)."""
    fsdp = ["--config_file", "recipes/accelerate/fsdp.yaml", "--num_processes", "2"]
    fsdp += ["--mixed_precision", "no"]
    cfg = _config(
        tmp_path / "fsdp" / "c.yaml",
        published,
        tiny_model_dir,
        trainer="dpo",
        per_device_train_batch_size=1,
    )
    _ok(_launch(*fsdp, "-m", "prefdelta.train.dpo", str(cfg)))
    multi = _record(cfg)
    single = _one_process(
        tmp_path, published, tiny_model_dir, trainer="dpo", per_device_train_batch_size=2
    )
    assert multi["num_processes"] == 2
    assert multi["losses"] == pytest.approx(single["losses"], abs=LOSS_TOLERANCE)
    assert (cfg.parent / "out" / "model.safetensors").is_file()  # a full state dict

    # rank 0 alone holding the weights while the reference is computed: refused, one line,
    # nothing cached
    bad = _config(tmp_path / "bad" / "c.yaml", published, tiny_model_dir, trainer="dpo")
    proc = _launch(
        *fsdp, "--fsdp_cpu_ram_efficient_loading", "true", "-m", "prefdelta.train.dpo", str(bad)
    )
    assert proc.returncode != 0
    errors = {line for line in proc.stderr.splitlines() if line.startswith("error: ")}
    assert len(errors) == 1, proc.stderr[-4000:]
    assert "fsdp_cpu_ram_efficient_loading: set it to false" in errors.pop()
    assert not (bad.parent / "ref_cache").exists()


def test_the_sweeps_accelerate_launch_trains_a_run_on_two_processes(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """`launch: {accelerate_config: ..., num_processes: 2}`: the command the sweep starts."""
    from prefdelta.train.sweep.config import LaunchConfig
    from prefdelta.train.sweep.launch import Job, command, train_jobs

    accel = tmp_path / "accel.yaml"  # recipes/accelerate/multi_gpu.yaml less bf16 (CPU)
    data = yaml.safe_load((ROOT / "recipes/accelerate/multi_gpu.yaml").read_text())
    accel.write_text(yaml.safe_dump({**data, "mixed_precision": "no"}))
    cfg = _config(tmp_path / "run" / "train.yaml", published, tiny_model_dir, trainer="dpo")
    launch = LaunchConfig(accelerate_config=accel.name, num_processes=2, devices=["0,1"])
    job = Job("[1/1] run", cfg.parent / "out", cfg, "prefdelta.train.dpo")
    cmd = command(job, launch, tmp_path)
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(accel)]
    assert cmd[5:7] == ["--num_processes", "2"] and cmd[-3:] == ["-m", job.module, str(cfg)]
    records: list[dict[str, Any]] = []
    lines: list[str] = []
    train_jobs([job], launch, tmp_path, lines.append, lambda j, r: records.append(r))
    (record,) = records
    assert record["num_processes"] == 2 and record["cuda_visible_devices"] == "0,1"
    assert (
        lines[0]
        == f"[1/1] run: training on CUDA_VISIBLE_DEVICES=0,1 (log {job.run_dir / 'train.log'})"
    )
