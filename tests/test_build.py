"""`prefdelta build` for real: distilabel pipelines, tiny local models, the result store."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from distilabel.constants import STEP_ATTR_NAME
from rich.console import Console

from prefdelta.builders import keys
from prefdelta.builders.build import run_build
from prefdelta.builders.pipelines import generation_pipeline
from prefdelta.builders.store import ResultStore
from prefdelta.builders.traces import model_group
from prefdelta.recipe import GenerationParams, GeneratorConfig, RecipeError, load_recipe
from prefdelta.schema import LOGS, PLACEMENT_LOG, SUMMARY
from support.api_build import interrupt_build, write_api_recipe
from support.model_fixtures import (  # noqa: F401
    ChatServer,
    chat_server,
    short_context_model_dir,
    tiny_model_dir,
)
from support.store_fixtures import InspectableStore

RECIPE = """
name: tiny-build
prompts: {{path: prompts.jsonl, reference_column: answer}}
generators:
  strong:
    model: {model}
    backend: transformers
    batch_size: 2
    samples_per_prompt: 2
    generation: {{temperature: 0.7, max_new_tokens: {tokens}}}
  weak:
    model: {model}
    backend: transformers
    batch_size: 2
    generation: {{temperature: 1.3, max_new_tokens: {tokens}}}
pairing: {{chosen: strong, rejected: [weak]}}
judge:
  model: {model}
  backend: transformers
  dimensions: [step_coherence, factuality]
  max_retries: {retries}
  structured: {structured}
  generation: {{temperature: 0.0, max_new_tokens: {judge_tokens}}}
"""


TINY_MODEL = "tiny-model"  # the link to the session's tiny model, beside each recipe


def write_recipe(
    folder: Path,
    model: Path,
    prompts: int,
    tokens: int = 12,
    judge_tokens: int = 160,
    retries: int = 0,
    structured: str = "auto",
) -> Path:
    """The tiny-model recipe in ``folder``. The model is named by a link beside the recipe,
    not by its session folder: the store keys (and so each sampled trace's seed) are then
    the same in every test session, and so is every trace the tiny model writes (one in a
    hundred of its samples is empty, which the build keeps apart; these recipes draw none)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"problem": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(prompts)]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    link = folder / TINY_MODEL
    if not link.exists():
        link.symlink_to(model, target_is_directory=True)
    path = folder / "recipe.yaml"
    path.write_text(
        RECIPE.format(
            model=TINY_MODEL,
            tokens=tokens,
            judge_tokens=judge_tokens,
            retries=retries,
            structured=f'"{structured}"',
        )
    )
    return path


def test_generators_on_one_model_share_one_step(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """One loaded copy and turns with all cores for generators of one model; API ones apart."""
    text = write_recipe(tmp_path, tiny_model_dir, prompts=1).read_text()
    api = "  api:\n    model: m\n    backend: openai\n    base_url: http://127.0.0.1:9/v1\n"
    other = f"  other:\n    model: {tiny_model_dir}\n    backend: transformers\n    batch_size: 3\n"
    text = text.replace(
        "pairing: {chosen: strong, rejected: [weak]}",
        api + other + "pairing: {chosen: strong, rejected: [weak, api, other]}",
    )
    path = tmp_path / "grouped.yaml"
    path.write_text(text)
    recipe = load_recipe(path)
    names = ["strong", "weak", "api", "other"]
    pipeline = generation_pipeline(recipe, [], names, tmp_path / "s.sqlite", tmp_path / "c")
    steps = {
        name: sorted(pipeline.dag.get_step(name)[STEP_ATTR_NAME].generators)
        for name in pipeline.dag
        if name != "load_prompts"
    }
    assert steps == {
        "generate_strong_weak": ["strong", "weak"],
        "generate_api": ["api"],
        "generate_other": ["other"],  # another batch size: another loaded pipeline
    }
    # vLLM generators of one model share one engine too (one copy on the GPU)
    vllm = {"model": "org/m", "backend": "vllm"}
    hot = GeneratorConfig(**vllm, generation=GenerationParams(temperature=1.3))
    assert model_group(GeneratorConfig(**vllm)) == model_group(hot) is not None
    assert model_group(GeneratorConfig(**vllm, tensor_parallel_size=2)) != model_group(hot)
    assert model_group(recipe.generators["api"]) is None
    # two local models side by side: each gets its share of the cores
    threads = [
        pipeline.dag.get_step(n)[STEP_ATTR_NAME].llm.cpu_threads
        for n in ("generate_strong_weak", "generate_other")
    ]
    assert threads == [max(1, (os.cpu_count() or 1) // 2)] * 2


def test_build_writes_every_trace_and_reuses_everything_on_rerun(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """Judged in prose (``structured: off``), a random model scores nothing: kept, said."""
    recipe = load_recipe(
        write_recipe(tmp_path, tiny_model_dir, prompts=3, judge_tokens=8, structured="off")
    )
    out = tmp_path / "out"
    log = io.StringIO()
    first = run_build(recipe, out, console=Console(file=log, width=200))

    traces = pq.read_table(out / "traces.parquet").to_pylist()
    assert len(traces) == 3 * (2 + 1) == first["traces"]
    assert len({t["trace_key"] for t in traces}) == len(traces)
    assert sorted((t["generator"], t["sample"]) for t in traces) == sorted(
        [("strong", 0), ("strong", 1), ("weak", 0)] * 3
    )
    # a random tiny model cannot answer as a judge: every trace is kept, with why
    for t in traces:
        assert t["judge_status"] in {"parse_error", "truncated", "refused", "empty"}
        assert t["judge_raw"] and t["judge_problem"]
        assert t["scores"] == {"step_coherence": None, "factuality": None}
        assert t["correct"] in (True, False)  # references exist, so the verifier ran
    assert sum(first["judge_status"].values()) == len(traces)
    # each prompt still gives its generator pair (strong sample 0 vs weak), without deltas
    assert first["pairs"] == 3 and first["judged_pairs"] == 0
    assert "no pair has sample-level deltas" in log.getvalue()  # and the summary says why
    # a log that is not a terminal gets plain progress lines, and cut-off traces are said
    assert "generate strong: 6/6 (100%)" in log.getvalue() and "━━━━ 6/6" not in log.getvalue()
    made = {
        g: sum(t["output_tokens"] for t in traces if t["generator"] == g)
        for g in ("strong", "weak")
    }
    assert {g: first["generators"][g]["output_tokens"] for g in made} == made
    assert 0 < made["weak"] <= 3 * 12  # three traces, at most their budget each
    # tokens per model as the backend counted them: prompts in, traces out, the judge too
    tokens = first["tokens"]
    assert {g: tokens["generators"][g]["output"] for g in made} == made
    assert (
        tokens["generators"]["strong"]["calls"] == 6 and tokens["generators"]["weak"]["calls"] == 3
    )
    assert all(u["input"] > 0 and u["unknown_input"] == 0 for u in tokens["generators"].values())
    assert (
        tokens["judge"]["calls"] >= 9 and tokens["judge"]["input"] > tokens["judge"]["output"] > 0
    )
    assert "tokens: strong " in log.getvalue() and "; judge " in log.getvalue()
    cut = first["finish_reason"].get("length", 0)
    assert cut > 0 and f"{cut} of 9 generations stopped at max_new_tokens" in log.getvalue()
    assert sum(first["unjudged_pairs"].values()) == 3 == first["unjudged_pairs_kept"]
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert [p["delta"] for p in pairs] == [None] * 3
    assert all(p["chosen_judge_status"] != "ok" for p in pairs)
    assert first["reused"] == {"generations": 0, "generated": 9, "judgments": 0, "judged": 9}
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["files"].keys() == {"traces.parquet", "pairs.parquet", "recipe.yaml"}
    assert (out / "recipe.yaml").read_text() == recipe.source_text

    again = run_build(recipe, out)
    assert again["reused"] == {"generations": 9, "generated": 0, "judgments": 9, "judged": 0}
    assert pq.read_table(out / "traces.parquet").to_pylist() == traces


def test_a_structured_judge_scores_every_trace_and_the_tables_reread_its_answers(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """The same random model, decoded under the schema: every trace judged, every pair with
    deltas, the judge measured. The store keeps the raw answers and the tables are read from
    them, so a change to the stored reading reaches a rebuild with no judge call."""
    recipe = load_recipe(write_recipe(tmp_path, tiny_model_dir, prompts=4))
    out = tmp_path / "out"
    first = run_build(recipe, out, console=Console(file=io.StringIO(), width=200))
    assert first["judge_status"] == {"ok": 12} and first["score_kind"] == {"expected": 12}
    assert first["pairs"] == 4 == first["judged_pairs"]
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert all(p["delta_step_coherence"] is not None and p["delta"] is not None for p in pairs)
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    for t in traces:
        assert len(t["score_probs"]["factuality"]) == 5
        assert sum(t["score_probs"]["factuality"]) == pytest.approx(1.0)
    validity = first["judge_validity"]
    assert validity["verifier_agreement"]["n_judged"] == 12
    assert validity["generator_order"]["overall"]["n_pairs"] == 4
    assert validity["length_bias"]["aggregate"]["n"] == 4

    # spoil the columns the judge step stored (as a reading bug would have): the rebuild
    # reads the raw answers again and restores them, without calling the judge
    store = ResultStore(out / "store.sqlite")
    with store._connect() as db:
        rows = db.execute("SELECT key, value FROM judgment").fetchall()
        for key, value in rows:
            stored = json.loads(value)
            stored["scores"] = dict.fromkeys(stored["scores"], 1.0)
            stored["judge_status"] = "parse_error"
            db.execute("UPDATE judgment SET value = ? WHERE key = ?", (json.dumps(stored), key))
    again = run_build(recipe, out)
    assert again["reused"]["judged"] == 0 and again["judge_status"] == {"ok": 12}
    assert pq.read_table(out / "traces.parquet").to_pylist() == traces


def test_a_generator_whose_calls_raise_fails_alone_and_the_build_says_why(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """strong and weak share one step: weak's error must not cost strong its traces."""
    from prefdelta.builders.build import BuildIncomplete
    from prefdelta.builders.llms.transformers import LocalTransformersLLM

    original = LocalTransformersLLM.generate

    @functools.wraps(original)  # distilabel reads generate's parameters from its signature
    def flaky(self: LocalTransformersLLM, *args: object, **kwargs: object) -> object:
        if kwargs.get("temperature") == 1.3:  # weak's calls (inherited by the forked step)
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LocalTransformersLLM, "generate", flaky)
    recipe = load_recipe(write_recipe(tmp_path, tiny_model_dir, prompts=2))
    out = tmp_path / "out"
    with pytest.raises(BuildIncomplete) as failed:
        run_build(recipe, out, console=Console(file=io.StringIO()))
    message = str(failed.value)
    assert message.startswith("2 of 6 generations failed (weak: 2)")
    assert "; weak: RuntimeError: probability tensor contains either inf, nan" in message
    assert "rows marked failed" in message
    store = InspectableStore(out / "store.sqlite")
    assert store.count_all("generation") == 4  # strong's 2 x 2 samples are kept
    # the build still finished: every planned trace is a row, the failed ones marked
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["failed"] == {"generations": 2, "judgments": 0, "by_generator": {"weak": 2}}
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    assert len(traces) == 6
    failed_rows = [t for t in traces if t["finish_reason"] == "error"]
    assert [t["generator"] for t in failed_rows] == ["weak", "weak"]
    assert all(t["judge_status"] == "failed" for t in failed_rows)
    assert "probability tensor" in failed_rows[0]["judge_problem"]
    assert all(t["judge_status"] == "ok" for t in traces if t["finish_reason"] != "error")
    assert pq.read_table(out / "pairs.parquet").num_rows == 0  # weak has no trace to pair

    monkeypatch.setattr(LocalTransformersLLM, "generate", original)  # the fault is gone
    done = run_build(recipe, out, console=Console(file=io.StringIO()))
    assert done["reused"]["generations"] == 4 and done["reused"]["generated"] == 2


def test_changing_only_the_judge_generates_nothing(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    out = tmp_path / "out"
    run_build(load_recipe(write_recipe(tmp_path, tiny_model_dir, prompts=2)), out)
    before = {t["trace_key"]: t["trace"] for t in pq.read_table(out / "traces.parquet").to_pylist()}

    changed = load_recipe(write_recipe(tmp_path, tiny_model_dir, prompts=2, judge_tokens=200))
    summary = run_build(changed, out)
    assert summary["reused"]["generated"] == 0
    assert summary["reused"]["generations"] == 6
    assert summary["reused"]["judged"] == 6  # every trace judged anew by the new judge
    after = {t["trace_key"]: t["trace"] for t in pq.read_table(out / "traces.parquet").to_pylist()}
    assert after == before


def test_a_build_reads_its_judge_template_once(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The template file is read once per build, so an edit while the build runs cannot
    make the judgment keys, the prompts and the summary's template hash disagree: all come
    from the text read at the start. Reads are logged to a file, so a read in a step's
    worker process counts too."""
    path = write_recipe(tmp_path, tiny_model_dir, prompts=2)
    template = tmp_path / "strict.jinja2"
    original = (
        "Rate from {{ low }} to {{ high }}.\nPROBLEM: {{ instruction }}\n"
        "SOLUTION: {{ generation }}\n{% for d in dimensions %}{{ d.name }}: {{ d.rubric }}\n"
        "{% endfor %}"
    )
    template.write_text(original)
    path.write_text(
        path.read_text().replace(
            "  max_retries:",
            "  template: strict.jinja2\n  system_prompt: Be strict.\n  max_retries:",
        )
    )
    recipe = load_recipe(path)
    reads = tmp_path / "reads.log"
    read_text = Path.read_text

    def logged_read(self: Path, *args: object, **kwargs: object) -> str:
        text = read_text(self, *args, **kwargs)  # type: ignore[arg-type]
        if self.resolve() == template.resolve():
            with reads.open("a") as log:
                log.write(f"{os.getpid()}\n")
            template.write_text(original + "Edited while the build runs.\n")
        return text

    monkeypatch.setattr(Path, "read_text", logged_read)
    out = tmp_path / "out"
    summary = run_build(recipe, out, console=Console(file=io.StringIO(), width=200))
    monkeypatch.undo()

    assert reads.read_text().splitlines() == [str(os.getpid())]
    assert summary["judge_template_sha256"] == hashlib.sha256(original.encode()).hexdigest()
    fingerprint = keys.judge_fingerprint(recipe.judge, original)
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    jkeys = [keys.judgment_key(fingerprint, t["prompt"], t["trace"]) for t in traces]
    assert len(traces) == 6 and ResultStore(out / "store.sqlite").count("judgment", jkeys) == 6


def _session_processes(sid: int) -> list[str]:
    """Live processes of a session (the build and anything it started), as "pid cmd"."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            alive.append(f"{entry.name} {cmd}")
    return alive


@pytest.mark.slow
def test_sigkill_mid_build_then_resume_loses_and_duplicates_nothing(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """``kill -9`` of the build's own process, once its first trace is stored (however long
    that takes): its workers die with it, and a rerun finishes with nothing lost or twice."""
    prompts = 12
    planned = prompts * 3
    recipe_path = write_recipe(tmp_path, tiny_model_dir, prompts=prompts, tokens=48)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "prefdelta", "build", str(recipe_path), "-o", str(out)]
    log = tmp_path / "first-run.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=sink, stderr=sink)
    store_path = out / "store.sqlite"
    finished = 0
    try:
        while proc.poll() is None:  # an event, not a deadline: the suite's timeout bounds it
            if store_path.exists():
                finished = InspectableStore(store_path).count_all("generation")
                if finished > 0:
                    break
            time.sleep(0.05)
        proc.kill()  # the build's process only, as `kill -9 PID` does
        proc.wait()
        output = log.read_text(errors="replace")[-4000:]
        assert 0 < finished < planned, (
            f"kill did not land mid-build ({finished} of {planned})\n{output}"
        )
        gone_by = time.monotonic() + 5
        while _session_processes(proc.pid) and time.monotonic() < gone_by:
            time.sleep(0.1)
        assert not _session_processes(proc.pid), (
            f"still alive 5 s after the kill: {_session_processes(proc.pid)}"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left, so the suite goes on
    store = InspectableStore(store_path)
    at_kill = store.all_values("generation")
    assert not (out / SUMMARY).exists()

    resumed = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["reused"]["generations"] >= len(at_kill)
    assert summary["reused"]["generations"] + summary["reused"]["generated"] == planned

    traces = pq.read_table(out / "traces.parquet").to_pylist()
    keys = [t["trace_key"] for t in traces]
    assert len(keys) == planned and len(set(keys)) == planned  # nothing lost, nothing twice
    by_key = {t["trace_key"]: t["trace"] for t in traces}
    for key, value in at_kill.items():  # what finished before the kill is what was published
        assert by_key[key] == value["trace"]
    assert store.count_all("generation") == planned

    # and every sampled trace is the one an uninterrupted build writes
    whole = tmp_path / "uninterrupted"
    cmd[-1] = str(whole)
    uninterrupted = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert uninterrupted.returncode == 0, (
        uninterrupted.stdout[-3000:] + uninterrupted.stderr[-3000:]
    )
    expected = {
        t["trace_key"]: t["trace"] for t in pq.read_table(whole / "traces.parquet").to_pylist()
    }
    differing = sorted(k for k in expected if expected[k] != by_key[k])
    assert not differing, f"{len(differing)} of {planned} traces differ after the resume"


@pytest.mark.slow
def test_ray_runs_the_same_build(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """`ray: true`: the same pipelines on a local Ray runtime, into the same store."""
    recipe_path = write_recipe(tmp_path, tiny_model_dir, prompts=3)
    recipe_path.write_text(recipe_path.read_text() + "ray: true\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "prefdelta", "build", str(recipe_path), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["reused"] == {"generations": 0, "generated": 9, "judgments": 0, "judged": 9}
    assert summary["traces"] == 9 and summary["pairs"] == 3
    # the steps ran as Ray actors (a local pipeline logs no placement): each batch is logged
    log = (out / LOGS / PLACEMENT_LOG).read_text().splitlines()
    placed = [json.loads(line) for line in log]
    assert {p["step"] for p in placed} == {"generate_strong_weak", "judge"}, placed
    assert sum(p["rows"] for p in placed if p["step"] == "judge") == 9, placed
    assert all(p["node_id"] and p["actor"].startswith("distilabel-") for p in placed), placed

    # Ray is an execution choice, not part of the data: the local rerun finds it all done
    local = recipe_path.with_name("local.yaml")
    local.write_text(recipe_path.read_text().replace("ray: true", ""))
    again = run_build(load_recipe(local), out)
    assert again["reused"] == {"generations": 9, "generated": 0, "judgments": 9, "judged": 0}


def test_a_build_never_overwrites_a_folder_that_is_not_a_build(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """`-o` at a user's folder or at a file: one line, exit 1, nothing written."""
    from typer.testing import CliRunner

    from prefdelta.cli import app

    recipe = write_recipe(tmp_path, tiny_model_dir, prompts=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text("my summary")
    (mine / "traces.parquet").write_text("my data")
    result = CliRunner().invoke(app, ["build", str(recipe), "-o", str(mine)])
    assert result.exit_code == 1, result.output
    assert "refusing to build into" in result.output and "not a prefdelta build" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in mine.iterdir()) == ["summary.json", "traces.parquet"]
    assert (mine / "summary.json").read_text() == "my summary"

    afile = tmp_path / "afile"
    afile.write_text("x")
    result = CliRunner().invoke(app, ["build", str(recipe), "-o", str(afile)])
    assert result.exit_code == 1 and "is a file" in result.output, result.output
    assert afile.read_text() == "x"


def test_a_judge_request_that_fails_costs_only_its_own_traces(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """A judge server that answers 400 for one prompt: every other judgment of the same
    batch is stored, the failures are in the store with the HTTP status and named by the
    build; a rerun without the fault judges only those."""
    from prefdelta.builders.build import BuildIncomplete

    path = write_recipe(tmp_path, tiny_model_dir, prompts=3)
    text = path.read_text().replace(
        f"judge:\n  model: {TINY_MODEL}\n  backend: transformers\n",
        f"judge:\n  model: served\n  backend: openai\n  base_url: {chat_server.url}\n",
    )
    path.write_text(text)
    recipe = load_recipe(path)
    chat_server.state.content = json.dumps(
        {d: {"rationale": "ok", "score": 3} for d in ("step_coherence", "factuality")}
    )
    chat_server.state.fail_when = {"What is 1 plus 1?": 400}
    out = tmp_path / "out"
    with pytest.raises(BuildIncomplete) as err:
        run_build(recipe, out, console=Console(file=io.StringIO()))
    message = str(err.value)
    assert "the judge call failed for 3 of 9 traces" in message and "HTTP 400" in message
    store = InspectableStore(out / "store.sqlite")
    assert store.count_all("judgment") == 6
    failures = store.all_values("failure")
    assert len(failures) == 3 and all("HTTP 400" in f["error"] for f in failures.values())
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    statuses = sorted(t["judge_status"] for t in traces)
    assert statuses == ["failed"] * 3 + ["ok"] * 6
    assert all("HTTP 400" in t["judge_problem"] for t in traces if t["judge_status"] == "failed")
    assert json.loads((out / SUMMARY).read_text())["failed"]["judgments"] == 3

    chat_server.state.fail_when = {}
    summary = run_build(recipe, out, console=Console(file=io.StringIO()))
    assert summary["reused"]["judgments"] == 6 and summary["reused"]["judged"] == 3
    assert summary["judge_status"] == {"ok": 9}


def test_a_second_build_into_a_busy_folder_stops_at_once(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    import fcntl

    from typer.testing import CliRunner

    from prefdelta.cli import app

    recipe = write_recipe(tmp_path, tiny_model_dir, prompts=1)
    out = tmp_path / "out"
    out.mkdir()
    ResultStore(out / "store.sqlite")  # a build folder, as the first build makes it
    with (out / ".lock").open("a+") as held:  # the first build, still running
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        result = CliRunner().invoke(app, ["build", str(recipe), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "another build is running" in result.output and "pid 4242" in result.output
    assert not (out / "traces.parquet").exists()


def test_prompts_over_a_generators_context_are_refused_one_by_one_before_any_call(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
    short_context_model_dir: Path,  # noqa: F811
) -> None:
    """One prompt beyond the generators' 512-token context is named and left out; the
    others build as if it were not there. ``prompts.max_tokens`` bounds lower still. (The
    judge, whose prompt takes more than 512 tokens, is the tiny model with a long context.)"""
    path = write_recipe(tmp_path, short_context_model_dir, prompts=2)
    (tmp_path / "judge-model").symlink_to(tiny_model_dir, target_is_directory=True)
    text = path.read_text().replace("judge:\n  model: tiny-model", "judge:\n  model: judge-model")
    path.write_text(text)
    prompts = tmp_path / "prompts.jsonl"
    long = "seven " * 2000
    prompts.write_text(prompts.read_text() + json.dumps({"problem": long, "answer": "7"}) + "\n")
    log = io.StringIO()
    out = tmp_path / "out"
    summary = run_build(load_recipe(path), out, console=Console(file=log, width=80))
    [refused] = summary["refused_prompts"]
    assert refused["generator"] == "strong" and refused["tokens"] > 2000
    assert (refused["bound"], refused["why"]) == (500, "context 512 - max_new_tokens 12")
    assert summary["prompts"] == 2 and summary["traces"] == 2 * 3
    assert refused["prompt_id"][:12] in log.getvalue()
    assert "forked, after parallelism" not in log.getvalue()
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    assert all(t["prompt_id"] != refused["prompt_id"] for t in traces)

    # a lower bound of the recipe's own: a prompt within the context but over it
    medium = json.dumps({"problem": "seven " * 200, "answer": "7"}) + "\n"
    prompts.write_text(prompts.read_text() + medium)
    bounded = tmp_path / "bounded.yaml"
    bounded.write_text(
        path.read_text().replace(
            "reference_column: answer}", "reference_column: answer, max_tokens: 100}"
        )
    )
    summary = run_build(load_recipe(bounded), tmp_path / "b", console=Console(file=io.StringIO()))
    assert summary["prompts"] == 2
    assert [r["why"] for r in summary["refused_prompts"]] == ["prompts.max_tokens"] * 2

    prompts.write_text(json.dumps({"problem": long, "answer": "7"}) + "\n")
    with pytest.raises(RecipeError, match=r"every prompt is too long.*context 512"):
        run_build(load_recipe(path), tmp_path / "c", console=Console(file=io.StringIO()))


def test_best_vs_worst_with_a_judge_that_scores_nothing_says_why_and_keeps_the_build(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """No pair, said in pair counts (not trace counts) with the reason; the publish that
    cannot split zero pairs fails in one line that says the build is kept."""
    from typer.testing import CliRunner

    from prefdelta.cli import app

    path = write_recipe(tmp_path, tiny_model_dir, prompts=2, judge_tokens=8, structured="off")
    text = path.read_text().replace(
        "pairing: {chosen: strong, rejected: [weak]}",
        "pairing: {strategy: best-vs-worst, pool: [strong, weak]}\n"
        "publish: {folder: ./published, test_size: 0.5}",
    )
    path.write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["build", str(path), "-o", str(out)])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "no pairs: 2 of 2 prompts had fewer than 2 traces the judge scored" in output
    assert "pairs the judge could not score" not in output  # these are traces, not pairs
    assert "traces the judge could not score, left out of the pools" in output
    assert f"The build is complete and kept in {out}" in output and "Traceback" not in output
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["pairs"] == 0 and summary["prompts_too_few_judged"] == 2
    assert sum(summary["unjudged_traces_left_out"].values()) == 6 and not summary["unjudged_pairs"]
    assert (out / "traces.parquet").is_file() and not (tmp_path / "published").exists()


def _asked(server: ChatServer, model: str) -> int:
    return sum(1 for b in server.state.bodies if b["model"] == model)


@pytest.mark.slow
def test_ctrl_c_stops_the_build_keeps_every_answer_and_a_rerun_resumes(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """Ctrl-C (SIGINT to the build's process group, as a terminal sends it) once answers
    are stored: the build stops with exit 130 and one line, judges nothing, writes no
    table and reports no failure; the rerun asks only what was never answered."""
    prompts = 10
    planned = prompts * 2
    chat_server.state.delay_s = 0.5  # the build cannot outrun the signal
    path = write_api_recipe(tmp_path, chat_server, prompts)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "prefdelta", "build", str(path), "-o", str(out), "--no-publish"]
    log = tmp_path / "interrupted.log"
    store_path = out / "store.sqlite"
    code = interrupt_build(cmd, store_path, log)
    output = log.read_text(errors="replace")
    assert code == 130, output[-4000:]
    assert output.strip().splitlines()[-1] == "interrupted; rerun to resume", output[-4000:]
    assert "fail" not in output.lower() and "Traceback" not in output, output[-4000:]
    store = InspectableStore(store_path)
    stored = store.count_all("generation")
    assert 0 < stored < planned, output[-4000:]
    assert store.count_all("failure") == 0 and store.count_all("judgment") == 0
    assert _asked(chat_server, "the-judge") == 0  # judging never started
    assert sorted(p.name for p in out.iterdir()) == [".lock", "store.sqlite"], output[-4000:]
    # every request that was answered before the stop is a stored generation
    assert _asked(chat_server, "gen-strong") + _asked(chat_server, "gen-weak") == stored

    chat_server.state.delay_s = 0.0
    chat_server.state.bodies.clear()
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["reused"]["generations"] == stored
    assert _asked(chat_server, "gen-strong") + _asked(chat_server, "gen-weak") == planned - stored
    assert summary["traces"] == planned and summary["judge_status"] == {"ok": planned}


def test_an_empty_answer_is_kept_and_counted_but_never_judged_or_paired(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """A generator answering "" (or only whitespace): the row is kept with its own status,
    the judge is not asked about it (no paid call), the summary and the terminal count
    it, and no pair has an empty side; a rerun asks nothing again."""
    path = write_api_recipe(tmp_path, chat_server, prompts=3)
    chat_server.state.blank_when = {
        "Briefly. What is 1 plus 1?": "",
        "Briefly. What is 2 plus 2?": " \n ",
    }
    out = tmp_path / "out"
    log = io.StringIO()
    summary = run_build(load_recipe(path), out, console=Console(file=log, width=300))

    assert _asked(chat_server, "the-judge") == 4  # 6 traces, 2 of them empty
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    assert len(traces) == 6
    empty = [t for t in traces if t["judge_status"] == "empty_trace"]
    assert sorted(t["trace"] for t in empty) == ["", " \n "]
    assert all(t["generator"] == "weak" and t["judge_attempts"] == 0 for t in empty)
    assert all(t["judge_problem"] == "not judged: the generator answered no text" for t in empty)
    assert summary["empty_traces"] == {"weak": 2}
    assert summary["judge_status"] == {"ok": 4, "empty_trace": 2}
    assert summary["failed"]["judgments"] == 0 and summary["prompts_without_pair"] == 2
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert [p["rejected"][0]["content"] for p in pairs] == [chat_server.state.content]
    assert "2 of 6 traces are empty (weak: 2)" in log.getvalue()

    chat_server.state.bodies.clear()
    again = run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    assert chat_server.state.bodies == []  # the empty answers are kept, not asked again
    assert pq.read_table(out / "traces.parquet").to_pylist() == traces
    assert again["empty_traces"] == {"weak": 2}


def test_a_200_answer_that_is_not_json_is_a_failure_kept_as_data(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """A generator's server that answers one request 200 text/plain: the row is kept,
    marked failed with what the server sent, counted, and named by the build."""
    from prefdelta.builders.build import BuildIncomplete

    path = write_api_recipe(tmp_path, chat_server, prompts=2)
    chat_server.state.text_when = {"Briefly. What is 1 plus 1?": "Service Unavailable"}
    out = tmp_path / "out"
    with pytest.raises(BuildIncomplete) as err:
        run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    reason = "the server answered 200 with a body that is not JSON: 'Service Unavailable'"
    assert f"1 of 4 generations failed (weak: 1); weak: {reason}" in str(err.value)
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    [failed] = [t for t in traces if t["finish_reason"] == "error"]
    assert failed["judge_status"] == "failed" and reason in failed["judge_problem"]
    assert json.loads((out / SUMMARY).read_text())["failed"]["generations"] == 1


def test_a_build_waiting_on_slow_requests_says_so(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests that take longer than the heartbeat: the build says, per stage, how many
    are still waiting, for how long, and how long a request may take."""
    import re

    monkeypatch.setenv("PREFDELTA_HEARTBEAT_S", "0.5")
    chat_server.state.delay_s = 3.0  # each answer takes several heartbeats
    path = write_api_recipe(tmp_path, chat_server, prompts=1)
    log = io.StringIO()
    run_build(load_recipe(path), tmp_path / "out", console=Console(file=log, width=300))
    output = log.getvalue()
    note = "(a request may wait 120 s, retried up to 6 times; recipe: request_timeout)"
    waiting = r": 1 of 1 still waiting; no new answer for \d+ s "
    assert re.search("generate strong" + waiting + re.escape(note), output), output
    assert re.search("judge" + waiting + re.escape(note), output), output
