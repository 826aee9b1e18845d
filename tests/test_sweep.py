"""``prefdelta sweep``: the paper's three experiments end to end.

Tiny random models on a synthetic published folder: every run really trains with TRL,
every model really answers the held-out prompts through the build's transformers backend,
and the results table and plot are written. Accuracy is ~0 here (random weights); what is
checked is the experiment's shape.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from prefdelta.cli import app
from prefdelta.push import publish_build
from prefdelta.train.sweep import (
    SweepError,
    correctness_runs,
    direction_counts,
    drop_unrankable,
    load_sweep,
    plan_runs,
)
from support.build_fixtures import make_build
from support.model_fixtures import tiny_model_dir  # noqa: F401  (a fixture)

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


def _mc_file(path: Path) -> Path:
    """A multiple-choice eval set in MMLU-Pro's shape: question, options, answer letter."""
    rows = [
        {
            "question": f"Which number is {i} + {i}?",
            "options": [str(2 * i), str(i), "0"],
            "answer": "A",
        }
        for i in range(1, 5)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_sweep_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:  # noqa: F811
    """All three experiments, two eval sets (one multiple-choice), every row kind, every
    figure, intervals on every row, and a rerun that trains and answers nothing again."""
    build = make_build(tmp_path / "build", n_prompts=20, seed=5)
    published = tmp_path / "published"
    publish_build(build, published, test_size=0.25)
    _train_yaml(tmp_path / "train.yaml", published, tiny_model_dir)
    _mc_file(tmp_path / "mc.jsonl")
    sweep = tmp_path / "sweep.yaml"
    out = tmp_path / "out"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "train": "train.yaml",
                "output_dir": str(out),
                "delta": {
                    "dimension": "step_coherence",
                    "fractions": [0.5, 1.0],
                    "random_seeds": [0, 1],
                },
                "generator_pairs": "all",
                "correctness": {"min_pairs": 5},
                "eval": {
                    "generation": {"temperature": 0.0, "max_new_tokens": 8},
                    "limit": 3,
                    "sets": [
                        {"name": "held_out"},
                        {
                            "name": "mc",
                            "prompts": {
                                "path": "mc.jsonl",
                                "column": "question",
                                "reference_column": "answer",
                            },
                            "scorer": "multiple_choice",
                            "options_column": "options",
                        },
                    ],
                },
            }
        ),
        encoding="utf-8",
    )

    result = CliRunner().invoke(app, ["sweep", str(sweep)])
    assert result.exit_code == 0, result.output

    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    # one row per run and eval set
    by_set = {s: {r["run"]: r for r in rows if r["eval_set"] == s} for s in ("held_out", "mc")}
    counts = _direction_counts(published)
    runs = {
        "base",
        "top50-step_coherence",
        "random50-seed0",
        "random50-seed1",
        "all",
        "pair-strong-vs-weak",
        "pair-strong-vs-weaker",
        *(f"correct-{d}" for d, n in counts.items() if n >= 5),
    }
    assert set(by_set["held_out"]) == set(by_set["mc"]) == runs
    assert len(rows) == 2 * len(runs)
    assert {r["scorer"] for r in by_set["mc"].values()} == {"multiple_choice"}
    assert all(r["n_eval"] == "3" for r in rows)
    for r in rows:  # every accuracy has its interval, every run its gain over the base
        low, acc, high = (float(r[k]) for k in ("accuracy_low", "accuracy", "accuracy_high"))
        assert 0.0 <= low <= acc <= high <= 1.0
        if r["run"] == "base":
            assert r["gain"] == "" and r["significant"] == ""
        else:
            assert float(r["gain_low"]) <= float(r["gain"]) <= float(r["gain_high"])
            assert r["significant"] in ("True", "False")
    held = by_set["held_out"]
    n_all = int(held["all"]["pairs"])
    assert int(held["top50-step_coherence"]["pairs"]) == int(held["random50-seed0"]["pairs"])
    assert int(held["random50-seed1"]["pairs"]) == -(-n_all // 2)
    # each generator pair's row carries its measured gap
    assert float(held["pair-strong-vs-weaker"]["generator_delta"]) > float(
        held["pair-strong-vs-weak"]["generator_delta"]
    )
    assert held["pair-strong-vs-weak"]["generator_accuracy_delta"] != ""
    # correctness runs are all one size: the smallest direction with min_pairs
    sized = [n for n in counts.values() if n >= 5]
    assert sized and {held[f"correct-{d}"]["pairs"] for d, n in counts.items() if n >= 5} == {
        str(min(sized))
    }

    for name in ("top_vs_random.png", "gain_vs_generator_delta.png", "correctness.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (out / "results.md").read_text()
    assert "## Eval set `held_out` (math, 3 prompts)" in report
    assert "## Eval set `mc` (multiple_choice, 3 prompts)" in report
    assert "### Top k% by `delta_step_coherence` against random k%" in report
    assert "| 50% |" in report and ", 2) |" in report  # the spread over 2 seeds
    assert "Slope " in report and "least squares over 2 pairs" in report
    assert "### Correctness directions" in report
    for d, n in counts.items():
        if n < 5:
            assert f"skipping correctness {d}: {n} pair(s)" in report
    assert "differences are significant at 95%" in report
    # each run is a normal training run: its config, model card and answers are kept
    run = out / "runs" / "top50-step_coherence"
    run_cfg = yaml.safe_load((run / "train.yaml").read_text())
    assert run_cfg["top_fraction"] == 0.5 and run_cfg["dimension"] == "step_coherence"
    assert "| top_fraction | `0.5` |" in (run / "README.md").read_text()
    assert len((run / "eval" / "held_out" / "answers.jsonl").read_text().splitlines()) == 3
    mc_answers = (run / "eval" / "mc" / "answers.jsonl").read_text().splitlines()
    assert [json.loads(a)["reference"] for a in mc_answers] == ["A", "A", "A"]
    # the reference pass ran once for the sweep: later runs found their pairs cached
    card = (out / "runs" / "pair-strong-vs-weak" / "README.md").read_text()
    assert " 0 computed for this run" in card

    # a rerun trains and answers nothing again
    again = CliRunner().invoke(app, ["sweep", str(sweep)])
    assert again.exit_code == 0, again.output
    assert ": training" not in again.output and "answering" not in again.output
    assert again.output.count("trained before, reused") == len(runs) - 1


def _direction_counts(published: Path) -> dict[str, int]:
    from prefdelta.loading import load_pairs

    ds = load_pairs(published)
    return direction_counts(ds["chosen_correct"], ds["rejected_correct"])


def test_correctness_runs_are_one_size_and_skips_are_counted(tmp_path: Path) -> None:
    from prefdelta.train.sweep.config import CorrectnessSweep

    counts = {"both_correct": 9, "chosen_only": 20, "rejected_only": 2, "both_wrong": 6}
    runs, notes = correctness_runs(CorrectnessSweep(min_pairs=4), counts)
    assert [(r.correctness, r.pairs) for r in runs] == [
        ("both_correct", 6),
        ("chosen_only", 6),
        ("both_wrong", 6),
    ]
    assert notes == [
        "skipping correctness rejected_only: 2 pair(s) in the training split, fewer than "
        "min_pairs (4)"
    ]
    assert runs[0].keys("delta")["num_pairs"] == 6
    assert runs[0].keys("delta")["correctness"] == "both_correct"
    runs, notes = correctness_runs(CorrectnessSweep(pairs=8, min_pairs=4), counts)
    assert [r.correctness for r in runs] == ["both_correct", "chosen_only"]
    assert "both_wrong: 6 pair(s) in the training split, fewer than pairs (8)" in notes[1]
    assert direction_counts([True, True, False, False, None], [True, False, True, False, True]) == {
        "both_correct": 1,
        "chosen_only": 1,
        "rejected_only": 1,
        "both_wrong": 1,
    }


def test_option_letters_are_read_as_a_final_answer() -> None:
    from prefdelta.builders.verify import choice_letter, is_choice_correct

    assert choice_letter("so the result is \\boxed{B}") == "B"
    assert choice_letter("\\boxed{\\text{(C)}} I think") == "C"
    assert choice_letter("Answer: B. Wait, no: the answer is (D).") == "D"
    assert choice_letter("(E)") == "E"
    assert choice_letter("the answer is A prime number") is None  # prose, not a letter
    assert choice_letter("the answer is K", n_options=4) is None  # not an option
    assert choice_letter("\\boxed{42}") is None
    assert is_choice_correct("The answer is (c)", "C") is False  # lowercase is prose
    assert is_choice_correct("The answer is (C)", " c ")


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
    assert train == (recipes / "dpo-demo.yaml").resolve()
    assert config.eval.sets[0].prompts is not None and config.correctness is not None
    paper, train = load_sweep(recipes / "sweep-paper.yaml")
    assert train == (recipes / "dpo-paper.yaml").resolve()
    assert [s.scorer for s in paper.eval.sets] == ["math", "math", "multiple_choice"]
    cpu = ["--use_cpu", "true", "--bf16", "false"]  # dpo-paper asks for a GPU's bf16
    for name, types in (
        ("dpo-demo", (DataArguments, DPOConfig, ModelConfig)),
        ("kto-demo", (KTODataArguments, KTOConfig, ModelConfig)),
        ("dpo-paper", (DataArguments, DPOConfig, ModelConfig)),
    ):
        with warnings.catch_warnings():  # the shipped configs use no deprecated key
            warnings.simplefilter("error", FutureWarning)
            data, _, model = parse_config(types, [str(recipes / f"{name}.yaml"), *cpu])
        assert data.trainer == name.split("-")[0] and model.model_name_or_path


def test_sweep_refuses_a_non_empty_folder_it_did_not_make(tmp_path: Path) -> None:
    """A user's results.csv in output_dir is never replaced; a sweep's own folder resumes."""
    (tmp_path / "train.yaml").write_text(f"dataset: {tmp_path / 'no-such-dataset'}\n")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.csv").write_text("my,own\n1,2\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\ntrain: train.yaml\noutput_dir: {out}\n")
    result = CliRunner().invoke(app, ["sweep", str(sweep)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: output_dir: {out} is not empty")
    assert (out / "results.csv").read_text() == "my,own\n1,2\n"
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"]

    # a new folder becomes a sweep's (marked on its first run): a rerun goes ahead there
    fresh = tmp_path / "fresh"
    sweep.write_text(f"name: s\ntrain: train.yaml\noutput_dir: {fresh}\n")
    for _ in range(2):
        result = CliRunner().invoke(app, ["sweep", str(sweep)])
        assert result.exit_code == 1  # the dataset is missing: past the folder check
        assert "output_dir" not in result.output and "dataset" in result.output
    assert (fresh / ".prefdelta-sweep.json").is_file()


def _small_sweep(tmp_path: Path, model: Path, out: Path, **extra: object) -> Path:
    """Two runs (top 50% and a random 50%), two eval prompts of four tokens each."""
    published = tmp_path / "published"
    if not published.exists():
        build = make_build(tmp_path / "build", n_prompts=12, seed=5)
        publish_build(build, published, test_size=0.25)
        _train_yaml(tmp_path / "train.yaml", published, model)
    sweep = tmp_path / f"{out.name}.yaml"
    config = {
        "name": "small",
        "train": "train.yaml",
        "output_dir": str(out),
        "delta": {"dimension": "step_coherence", "fractions": [0.5], "random_seeds": [0]},
        "generator_pairs": None,
        "eval": {"generation": {"temperature": 0.0, "max_new_tokens": 4}, "limit": 2},
        **extra,
    }
    sweep.write_text(yaml.safe_dump(config), encoding="utf-8")
    return sweep


def _results(out: Path) -> dict[str, dict[str, str]]:
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {r["run"]: {k: v for k, v in r.items() if k != "model_dir"} for r in rows}


@pytest.mark.slow
def test_sweep_trains_runs_side_by_side_one_device_each(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """`launch: {devices: [0, 1]}`: each run its own process with its own
    CUDA_VISIBLE_DEVICES (on CPU the devices are just two slots), both at once, with the
    results of the sweep that trains one run after another in its own process."""
    import time

    sequential = tmp_path / "sequential"
    t0 = time.monotonic()
    result = CliRunner().invoke(
        app, ["sweep", str(_small_sweep(tmp_path, tiny_model_dir, sequential))]
    )
    seq_wall = time.monotonic() - t0
    assert result.exit_code == 0, result.output

    parallel = tmp_path / "parallel"
    sweep = _small_sweep(tmp_path, tiny_model_dir, parallel, launch={"devices": [0, 1]})
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["sweep", str(sweep)])
    par_wall = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    print(f"sequential sweep {seq_wall:.1f} s, two devices {par_wall:.1f} s")

    assert _results(parallel) == _results(sequential)
    runs = sorted(p for p in (parallel / "runs").iterdir())
    assert [r.name for r in runs] == ["random50-seed0", "top50-step_coherence"]
    seen, spans = [], []
    for run in runs:
        (attempt,) = json.loads((run / "launch.json").read_text())["attempts"]
        record = json.loads((run / "prefdelta-run.json").read_text())
        # what the training process itself saw is the slot the sweep gave it
        assert record["cuda_visible_devices"] == attempt["devices"]
        assert attempt["exit_code"] == 0 and attempt["command"][1:3] == [
            "-m",
            "prefdelta.train.dpo",
        ]
        assert "=== attempt 1" in (run / "train.log").read_text()
        seen.append(attempt["devices"])
        spans.append((attempt["started"], attempt["ended"]))
    assert sorted(seen) == ["0", "1"]
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # both trained at once

    # a rerun trains nothing again
    again = CliRunner().invoke(app, ["sweep", str(sweep)])
    assert again.exit_code == 0, again.output
    assert "training" not in again.output and again.output.count("trained before, reused") == 2


CRASH_HOOK = """
import os, sys
from pathlib import Path

_counter = Path(os.environ.get("PREFDELTA_TEST_CRASHES", "/nonexistent"))
if _counter.is_file() and any("random50-seed0" in a for a in sys.orig_argv):
    _left = int(_counter.read_text())
    if _left > 0:
        _counter.write_text(str(_left - 1))
        sys.stderr.write("RuntimeError: simulated crash (out of memory)\\n")
        sys.stderr.flush()
        os._exit(3)
"""


@pytest.mark.slow
def test_a_crashed_run_is_reported_retried_alone_and_the_sweep_resumes(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The random run's process dies at start (a hook the test puts on the children's
    path, as a crash would): its log and last lines are said, it is retried alone, and a
    rerun after it failed for good trains only it."""
    import os

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASH_HOOK)
    monkeypatch.setenv("PYTHONPATH", f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    crashes = tmp_path / "crashes"
    monkeypatch.setenv("PREFDELTA_TEST_CRASHES", str(crashes))
    out = tmp_path / "out"
    sweep = _small_sweep(tmp_path, tiny_model_dir, out, launch={"retries": 1})
    log = out / "runs" / "random50-seed0" / "train.log"

    crashes.write_text("2")  # the first try and its retry both crash
    result = CliRunner().invoke(app, ["sweep", str(sweep)])
    assert result.exit_code == 1
    assert (
        f"error: [2/2] random50-seed0: training failed (exit 3, 2 attempt(s)); log: {log}"
        in result.output
    )
    assert "simulated crash (out of memory)" in result.output  # its last lines
    assert "random50-seed0: crashed (exit 3)" in result.output and "retrying alone" in result.output
    assert (out / "runs" / "top50-step_coherence" / "trained.json").is_file()
    assert not (out / "runs" / "random50-seed0" / "trained.json").exists()

    crashes.write_text("1")  # crashes once, then the retry trains
    result = CliRunner().invoke(app, ["sweep", str(sweep)])
    assert result.exit_code == 0, result.output
    assert "[1/2] top50-step_coherence: trained before, reused" in result.output
    assert "top50-step_coherence: training" not in result.output
    attempts = json.loads((log.parent / "launch.json").read_text())["attempts"]
    assert [a["exit_code"] for a in attempts] == [3, 0]
    assert {r for r in _results(out)} == {"base", "top50-step_coherence", "random50-seed0"}


def test_launch_config_is_checked_before_anything_trains(tmp_path: Path) -> None:
    (tmp_path / "train.yaml").write_text("dataset: x\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\ntrain: train.yaml\nlaunch: {devices: [0, '1,2', 3]}\n")
    config, _ = load_sweep(sweep)
    assert config.launch is not None and config.launch.devices == ["0", "1,2", "3"]
    assert config.launch.retries == 1
    for launch, message in (
        ("{devices: [0, '0,1']}", "launch.devices: GPU 0 is in two slots"),
        ("{devices: [gpu0]}", "expected GPU indices like 0 or '0,1', got 'gpu0'"),
        ("{num_processes: 2}", "num_processes goes with accelerate_config"),
        ("{retries: -1}", "launch.retries: expected greater than or equal to 0, got -1"),
    ):
        sweep.write_text(f"name: s\ntrain: train.yaml\nlaunch: {launch}\n")
        with pytest.raises(SweepError) as exc:
            load_sweep(sweep)
        assert len(exc.value.lines) == 1 and message in exc.value.lines[0], exc.value.lines
        assert exc.value.lines[0].startswith(f"{sweep}:3: launch")
    sweep.write_text("name: s\ntrain: train.yaml\nlaunch:\n  accelerate_config: nope.yaml\n")
    with pytest.raises(SweepError) as exc:
        load_sweep(sweep)
    assert exc.value.lines == [
        f"{sweep}:4: launch.accelerate_config: file not found: {tmp_path / 'nope.yaml'}"
    ]
