"""An API build keeps its request slots busy while rows remain, and loses no answer it got.

Both are checked at the loopback chat server: what it was asked, and in what order it
answered. Nothing here depends on how fast the machine is: the server holds requests until
others are answered, and the build is killed once the store holds what was answered.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distilabel.constants import SIGINT_HANDLER_CALLED_ENV_NAME
from rich.console import Console

from prefdelta.builders.build import run_build
from prefdelta.builders.llms.common import StopCheck
from prefdelta.builders.pipelines import BuildPipeline
from prefdelta.builders.runtime import run_pipeline
from prefdelta.recipe import load_recipe
from prefdelta.schema import SUMMARY
from support.api_build import write_api_recipe
from support.model_fixtures import ChatServer, chat_server  # noqa: F401
from support.steps import FrozenObjects
from support.store_fixtures import InspectableStore

JUDGE = "the-judge"


def _ask(body: dict) -> tuple[str, str]:
    """What a request asks: its model and its last message."""
    return body["model"], str(body["messages"][-1]["content"])


def test_a_slow_request_holds_up_no_other_row(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """The requests about prompt 0 are answered only once 11 other requests to their model
    have been: each generator's (it has 11 others), the judge's two (it has 22 others). A
    build that ran its rows a batch at a time (batches of 4 here) would wait for them
    before asking its next batch, so the others could not overtake them."""
    prompts = 12
    path = write_api_recipe(
        tmp_path, chat_server, prompts, batch_size=4, concurrency=4, judge=(4, 4)
    )
    needle = "What is 0 plus 0?"
    chat_server.state.hold_when = {needle: prompts - 1}
    out = tmp_path / "out"
    summary = run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    assert summary["judge_status"] == {"ok": 2 * prompts}

    for model, requests in (("gen-strong", prompts), ("gen-weak", prompts), (JUDGE, 2 * prompts)):
        order = [_ask(b)[1] for b in chat_server.state.answered if b["model"] == model]
        assert len(order) == requests
        held = [i for i, text in enumerate(order) if needle in text]
        assert held and min(held) >= prompts - 1, (model, held)


@pytest.mark.slow
def test_a_build_killed_in_a_large_batch_asks_nothing_again_that_was_answered(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """40 prompts in one batch per generator, 4 requests in flight each: the server answers
    10 requests and holds the rest; once the store holds those 10 the build is killed
    (SIGKILL: no step gets to finish anything). The resumed build asks for every trace but
    those 10, and finishes the build."""
    prompts = 40
    planned = 2 * prompts
    answered_first = 10
    path = write_api_recipe(tmp_path, chat_server, prompts, batch_size=64, concurrency=4)
    chat_server.state.hold_after = answered_first
    out = tmp_path / "out"
    store_path = out / "store.sqlite"
    cmd = [sys.executable, "-m", "prefdelta", "build", str(path), "-o", str(out), "--no-publish"]
    log = tmp_path / "killed.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=sink, stderr=sink)
    try:
        # every answered request is stored at once; a build that stores a batch at a time
        # never gets there (the batch's other requests are held), so the wait is bounded
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if store_path.exists() and (
                InspectableStore(store_path).count_all("generation") >= answered_first
            ):
                break
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    first = {_ask(b) for b in chat_server.state.answered}
    assert len(first) == answered_first
    assert all(model != JUDGE for model, _ in first)

    chat_server.state.bodies.clear()
    chat_server.state.hold_after = None  # the killed build's held requests go unread
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    asked = [_ask(b) for b in chat_server.state.bodies if b["model"] != JUDGE]
    assert set(asked) & first == set()  # nothing answered before is asked again
    assert len(asked) == len(set(asked)) == planned - answered_first
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["reused"]["generations"] == answered_first
    assert summary["traces"] == planned and summary["judge_status"] == {"ok": planned}


def test_a_build_pipeline_saves_no_batch_cache_and_names_its_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """distilabel saves its cache after every batch, and each save hashes a dump of every
    step to name the cache folder: CPU a build spends per batch on a cache it never reads
    (it resumes from its store). A build's pipeline runs every batch all the same, saves
    none of it (no batch's rows, no batch manager) and names the folder once per run;
    plain distilabel, run beside it, shows what is measured."""
    from distilabel.pipeline import Pipeline
    from distilabel.pipeline.base import BasePipeline
    from distilabel.steps import KeepColumns, LoadDataFromDicts

    from prefdelta.builders.pipelines import BuildPipeline

    signature = BasePipeline.signature
    hashed: list[str] = []

    def counted(self: BasePipeline) -> str:
        hashed.append(self.name)
        return signature.fget(self)

    monkeypatch.setattr(BasePipeline, "signature", property(counted))
    rows = [{"n": i, "drop": "x"} for i in range(24)]
    out = {}
    for kind in (Pipeline, BuildPipeline):
        with kind(name=kind.__name__.lower(), cache_dir=tmp_path / kind.__name__) as pipeline:
            LoadDataFromDicts(data=rows, batch_size=2) >> KeepColumns(
                columns=["n"], input_batch_size=2
            )
        distiset = pipeline.run(use_cache=False)
        saved = sorted(p.name for p in (tmp_path / kind.__name__).rglob("*.json"))
        out[kind] = (sorted(distiset["default"]["train"]["n"]), hashed.count(pipeline.name), saved)
    assert out[Pipeline][0] == out[BuildPipeline][0] == list(range(24))
    assert out[Pipeline][1] > 12, out[Pipeline]  # about once per batch, and more
    assert "batch_manager.json" in out[Pipeline][2]
    assert out[BuildPipeline][1] <= 2, out[BuildPipeline]  # its folder; its steps' run id
    assert out[BuildPipeline][2] == [], out[BuildPipeline]


def test_a_pipelines_steps_start_from_the_builds_objects_frozen(tmp_path: Path) -> None:
    """A full collection in a step process walks every object the collector tracks, the
    build's imports included (a tenth of a second, every page of them copied into the
    step); a step forked from a frozen build never walks them. The build collects as
    usual once the run is over."""
    from distilabel.steps import LoadDataFromDicts

    noted = tmp_path / "frozen.txt"
    with BuildPipeline(name="frozen", cache_dir=tmp_path / "cache") as pipeline:
        LoadDataFromDicts(data=[{"n": i} for i in range(6)], batch_size=2) >> FrozenObjects(
            out=str(noted), input_batch_size=2
        )
    assert gc.get_freeze_count() == 0
    run_pipeline(pipeline, tmp_path / "store.sqlite")
    assert gc.get_freeze_count() == 0
    seen = [line.split() for line in noted.read_text().splitlines()]
    assert len(seen) == 3, seen
    assert all(int(pid) != os.getpid() for pid, _ in seen), seen  # a step process's
    assert all(int(count) > 100_000 for _, count in seen), seen  # distilabel's alone: more


@pytest.mark.parametrize("how", ["run_build", "prefdelta build"])
def test_a_build_keeps_what_it_holds_frozen_until_it_ends(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """Between its pipelines and while it writes its tables, a build's full collections
    would walk every object of its imports and its plan, a tenth of a second each: they
    stay frozen from the build's start to its end, and the build hands them back to the
    collector when it returns, from Python or as the command."""
    from typer.testing import CliRunner

    import prefdelta.builders.build as build_module
    from prefdelta.cli import app

    frozen: dict[str, int] = {}
    pair = build_module.make_pairs

    def noted(*args: object, **kwargs: object) -> object:
        frozen["pairing"] = gc.get_freeze_count()
        return pair(*args, **kwargs)

    monkeypatch.setattr(build_module, "make_pairs", noted)
    path = write_api_recipe(tmp_path, chat_server, prompts=2)
    out = tmp_path / "out"
    assert gc.get_freeze_count() == 0
    if how == "run_build":
        run_build(load_recipe(path), out, console=Console(file=io.StringIO()))
    else:
        result = CliRunner().invoke(app, ["build", str(path), "-o", str(out), "--no-publish"])
        assert result.exit_code == 0, result.output
    assert json.loads((out / SUMMARY).read_text())["judge_status"] == {"ok": 4}
    assert frozen["pairing"] > 100_000, frozen  # the imports' objects, after both pipelines
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_a_steps_rows_see_ctrl_c_at_once_and_the_stop_request_within_a_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step checks for Ctrl-C before each row: the signal's mark (in its environment) at
    every check, the stop request's file (a Ray step's only news of it) once per look
    interval; once seen, the request holds even if the file goes."""
    monkeypatch.delenv(SIGINT_HANDLER_CALLED_ENV_NAME, raising=False)
    request = tmp_path / ".stop"
    looks_now = StopCheck(str(request), every_s=0.0)
    looks_later = StopCheck(str(request), every_s=3600.0)
    assert not looks_now() and not looks_later()
    request.touch()
    assert looks_now()  # looked again: seen
    assert not looks_later()  # not looked again within its interval
    request.unlink()
    assert looks_now()  # seen stays seen
    monkeypatch.setenv(SIGINT_HANDLER_CALLED_ENV_NAME, "1")
    assert looks_later()  # Ctrl-C in this process: at once
