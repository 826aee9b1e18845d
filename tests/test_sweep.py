"""``prefdelta sweep``: the paper's delta and generator-pair experiments end to end.

Tiny random models on a synthetic published folder: every run really trains with TRL,
every model really answers the held-out prompts through the build's transformers backend,
and the results table and plot are written. Accuracy is ~0 here (random weights); what is
checked is the experiment's shape.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from build_fixtures import make_build
from model_fixtures import tiny_model_dir  # noqa: F401  (a fixture)
from prefdelta.cli import app
from prefdelta.push import publish_build
from prefdelta.train.sweep import SweepError, drop_unrankable, load_sweep, plan_runs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def _train_yaml(path: Path, dataset: Path, model: Path) -> Path:
    config = {
        "trainer": "dpo",
        "dataset": str(dataset),
        "model_name_or_path": str(model),
        "output_dir": "unused",  # the sweep sets each run's own
        "top_fraction": 0.9,  # the sweep resets selection keys of the base config
        "use_cpu": True,
        "bf16": False,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "save_strategy": "no",
        "report_to": "none",
        "max_length": 256,
        "logging_steps": 1,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.slow
def test_sweep_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:  # noqa: F811
    build = make_build(tmp_path / "build", n_prompts=20, seed=5)
    published = tmp_path / "published"
    publish_build(build, published, test_size=0.25)
    _train_yaml(tmp_path / "train.yaml", published, tiny_model_dir)
    sweep = tmp_path / "sweep.yaml"
    out = tmp_path / "out"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "train": "train.yaml",
                "output_dir": str(out),
                "delta": {"dimension": "step_coherence", "fractions": [0.5, 1.0]},
                "generator_pairs": ["strong:weak"],
                "eval": {"generation": {"temperature": 0.0, "max_new_tokens": 8}, "limit": 3},
            }
        ),
        encoding="utf-8",
    )

    result = CliRunner().invoke(app, ["sweep", str(sweep)])
    assert result.exit_code == 0, result.output

    with (out / "results.csv").open() as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert set(rows) == {
        "base",
        "top50-step_coherence",
        "random50-seed0",
        "all",
        "pair-strong-vs-weak",
    }
    assert all(r["n_eval"] == "3" for r in rows.values())
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows.values())
    n_all = int(rows["all"]["pairs"])
    assert int(rows["top50-step_coherence"]["pairs"]) == int(rows["random50-seed0"]["pairs"])
    assert int(rows["random50-seed0"]["pairs"]) == -(-n_all // 2)
    assert 0 < int(rows["pair-strong-vs-weak"]["pairs"]) < n_all

    png = out / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()
    assert "| top50-step_coherence | delta | top | 0.5 |" in table
    # each run is a normal training run: its config, model card and answers are kept
    run = out / "runs" / "top50-step_coherence"
    run_cfg = yaml.safe_load((run / "train.yaml").read_text())
    assert run_cfg["top_fraction"] == 0.5 and run_cfg["dimension"] == "step_coherence"
    assert "| top_fraction | `0.5` |" in (run / "README.md").read_text()
    assert len((run / "answers.jsonl").read_text().splitlines()) == 3
    # the reference pass ran once for the sweep: later runs found their pairs cached
    # ("all" ran before it: the pair's sequences are all cached)
    card = (out / "runs" / "pair-strong-vs-weak" / "README.md").read_text()
    assert " 0 computed for this run" in card

    # a rerun trains nothing again
    again = CliRunner().invoke(app, ["sweep", str(sweep)])
    assert again.exit_code == 0, again.output
    assert "training" not in again.output and again.output.count("reused") == 4


def test_a_build_without_scored_pairs_still_sweeps_what_it_can(tmp_path: Path) -> None:
    """A build whose judge scored nothing: no top-k runs, the rest of the sweep stays."""
    (tmp_path / "train.yaml").write_text("dataset: x\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        "name: s\ntrain: train.yaml\ngenerator_pairs: all\n"
        "delta: {dimension: step_coherence, fractions: [0.3, 1.0], random_seeds: [0]}\n"
    )
    config, _ = load_sweep(sweep)
    runs = plan_runs(config, ["strong:weak"])
    assert [r.selection for r in runs] == ["top", "random", "all", "pair"]

    kept, note = drop_unrankable(runs, "delta_step_coherence", [None, None, None])
    assert [r.selection for r in kept] == ["random", "all", "pair"]
    assert note is not None and "none of the 3 pairs has a delta_step_coherence" in note
    assert drop_unrankable(runs, "delta_step_coherence", [None, 1.0]) == (runs, None)


def test_sweep_on_an_unknown_dimension_is_one_line(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    build = make_build(tmp_path / "build", n_prompts=8, seed=5)
    published = tmp_path / "published"
    publish_build(build, published, test_size=0.25)
    _train_yaml(tmp_path / "train.yaml", published, tiny_model_dir)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "name: bad-dim\ntrain: train.yaml\n"
        f"output_dir: {tmp_path / 'out'}\n"
        "delta: {dimension: brevity, fractions: [0.5]}\n"
    )
    result = CliRunner().invoke(app, ["sweep", str(sweep)])
    assert result.exit_code == 1, result.output
    assert "unknown dimension 'brevity'" in result.output
    assert "delta_step_coherence" in result.output and "Traceback" not in result.output


def test_sweep_config_errors_point_at_the_line(tmp_path: Path) -> None:
    (tmp_path / "train.yaml").write_text("dataset: x\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\ntrain: train.yaml\ndelta:\n  fractons: [0.3]\n")
    with pytest.raises(SweepError) as exc:
        load_sweep(sweep)
    assert exc.value.lines == [f"{sweep}:4: delta.fractons: unknown key 'fractons'"]
    sweep.write_text("name: s\ntrain: nope.yaml\n")
    with pytest.raises(SweepError, match="train: file not found"):
        load_sweep(sweep)
    sweep.write_text("name: s\ntrain: train.yaml\noverrides: {top_fraction: 0.3}\n")
    with pytest.raises(SweepError, match="the sweep sets top_fraction itself"):
        load_sweep(sweep)


def test_shipped_sweep_and_train_configs_are_valid() -> None:
    from trl import DPOConfig, KTOConfig, ModelConfig

    from prefdelta.train.configs import DataArguments, KTODataArguments, parse_config

    recipes = Path(__file__).parent.parent / "recipes" / "train"
    config, train = load_sweep(recipes / "sweep-demo.yaml")
    assert train == (recipes / "dpo-demo.yaml").resolve() and config.eval.prompts is not None
    cpu = ["--use_cpu", "true", "--bf16", "false"]  # dpo-paper asks for a GPU's bf16
    for name, types in (
        ("dpo-demo", (DataArguments, DPOConfig, ModelConfig)),
        ("kto-demo", (KTODataArguments, KTOConfig, ModelConfig)),
        ("dpo-paper", (DataArguments, DPOConfig, ModelConfig)),
    ):
        data, _, model = parse_config(types, [str(recipes / f"{name}.yaml"), *cpu])
        assert data.trainer == name.split("-")[0] and model.model_name_or_path
