"""A build's end holds a chunk of prompts' texts at a time, not the whole build's.

The tables are written a chunk of prompts at a time (``builders.tables``): a build of
thousands of prompts with long traces must not need memory for all of their texts at once,
and the tables written in chunks must be the ones a single write gives.
"""

from __future__ import annotations

import io
import json
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from prefdelta.builders import judging, tables
from prefdelta.builders.build import BuildIncomplete, run_build
from prefdelta.recipe import load_recipe
from prefdelta.schema import PAIRS_FILE, SUMMARY, TRACES_FILE
from support.api_build import COLUMNS_RECIPE, write_api_recipe
from support.model_fixtures import ChatServer, chat_server  # noqa: F401

DIMS = ("step_coherence", "factuality")
TRACE_CHARS = 30_000


def _scores(score: int) -> str:
    return json.dumps({d: {"rationale": "r", "score": score} for d in DIMS})


def _quiet() -> Console:
    return Console(file=io.StringIO())


def _tables(out: Path) -> dict[str, Any]:
    return {name: pq.read_table(out / name) for name in (TRACES_FILE, PAIRS_FILE)}


def _summary(out: Path) -> dict[str, Any]:
    """summary.json but what differs between two runs of one build (time, reuse, hashes)."""
    summary = json.loads((out / SUMMARY).read_text())
    return {k: v for k, v in summary.items() if k not in ("seconds", "reused", "files")}


def _rebuild_in_chunks(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the build again from its store (no call is made), two prompts a chunk."""
    monkeypatch.setattr(tables, "CHUNK_PROMPTS", 2)
    monkeypatch.setattr(judging, "CHUNK", 3)
    (out / SUMMARY).unlink()
    run_build(load_recipe(out.parent / "recipe.yaml"), out, console=_quiet())


def _assert_same_build(
    out: Path, single: dict[str, Any], summary: dict[str, Any], chunks: int
) -> None:
    for name, table in _tables(out).items():
        assert table.schema == single[name].schema, name
        assert table.to_pylist() == single[name].to_pylist(), name  # rows, in order
    assert pq.ParquetFile(out / TRACES_FILE).metadata.num_row_groups == chunks
    assert _summary(out) == summary


def test_a_panel_build_written_in_chunks_is_the_build_written_at_once(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A two-judge panel over 7 prompts, with traces of every kind (scored apart, ties,
    empty, failed): the tables and summary written two prompts at a time (4 chunks) are the
    ones written in one go."""
    prompts = 7
    path = write_api_recipe(tmp_path, chat_server, prompts)
    path.write_text(
        path.read_text()
        + "  panel:\n    combine: mean\n    judges:\n      - {name: a}\n"
        + "      - {name: b, model: judge-b}\n"
    )
    state = chat_server.state
    state.content_by_model = {"gen-strong": "Strong: the sum.", "gen-weak": "Weak: a guess."}
    state.content_when = {"Weak: a guess.": _scores(2), "What is 3 plus 3": _scores(5)}
    state.blank_when = {"What is 5 plus 5": ""}  # no text: kept, never judged nor paired
    state.fail_when = {"What is 6 plus 6": 400}  # no generation: rows marked failed
    out = tmp_path / "out"
    with pytest.raises(BuildIncomplete):
        run_build(load_recipe(path), out, console=_quiet())
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["judge_status"] == {"ok": 10, "empty_trace": 2, "failed": 2}
    assert summary["pairs"] > 0
    single, before = _tables(out), _summary(out)
    failed = [t for t in single[TRACES_FILE].to_pylist() if t["judge_status"] == "failed"]
    assert [t["finish_reason"] for t in failed] == ["error", "error"]
    assert all("not judged: the generation failed" in t["judge_problem"] for t in failed)

    state.bodies.clear()
    with pytest.raises(BuildIncomplete):
        _rebuild_in_chunks(out, monkeypatch)
    assert all("What is 6 plus 6" in str(b["messages"]) for b in state.bodies)  # only those
    _assert_same_build(out, single, before, chunks=4)


def test_a_preference_dataset_judged_in_chunks_is_the_one_judged_at_once(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``columns`` recipe (the dataset's own pairs, a side missing in one row): the same
    tables and summary (label agreement included) whether written at once or in chunks."""
    rows = [
        {"question": f"What is {i} plus {i}?", "better": f"GOOD: {2 * i}", "worse": f"BAD {i}"}
        for i in range(5)
    ]
    rows[1] |= {"better": "BAD: 3", "worse": "GOOD: 2"}  # the judge disagrees with the label
    rows[2]["worse"] = None  # no rejected side: a pair without a delta
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "recipe.yaml"
    path.write_text(COLUMNS_RECIPE.format(url=chat_server.url))
    chat_server.state.content = _scores(3)
    chat_server.state.content_when = {"GOOD": _scores(5), "BAD": _scores(1)}
    out = tmp_path / "out"
    summary = run_build(load_recipe(path), out, console=_quiet())
    assert summary["pairs"] == 5 and summary["label_agreement"]["disagree"] == 1
    single, before = _tables(out), _summary(out)

    chat_server.state.bodies.clear()
    _rebuild_in_chunks(out, monkeypatch)
    assert chat_server.state.bodies == []
    _assert_same_build(out, single, before, chunks=3)


def _peak_end_of_build(out: Path) -> int:
    """Peak bytes the build's end (judging stage with every judgment stored, the tables,
    the summary) allocates, read from its store: no call is made."""
    (out / SUMMARY).unlink()
    recipe = load_recipe(out.parent / "recipe.yaml")
    tracemalloc.start()
    try:
        run_build(recipe, out, console=_quiet())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_the_end_of_a_build_holds_a_chunk_of_long_traces_not_all_of_them(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Traces of 30 kB: 16 prompts, then 64 (4x the text, 5.6 MB more of it). Four prompts
    a chunk, the peak memory of the build's end grows by a small part of the text added
    (what each trace's summary keeps), where holding every text would add it several
    times over (decoded, in rows, in the table's Arrow copy)."""
    small, large = 16, 64
    monkeypatch.setattr(tables, "CHUNK_PROMPTS", 4)
    monkeypatch.setattr(judging, "CHUNK", 8)
    state = chat_server.state
    state.delay_s = 0.0
    state.content_by_model = {"gen-strong": "S" * TRACE_CHARS, "gen-weak": "W" * TRACE_CHARS}
    state.content_when = {"W" * 100: _scores(2)}  # the judge scores weak traces lower
    peaks = {}
    for prompts in (large, small):
        folder = tmp_path / str(prompts)
        path = write_api_recipe(folder, chat_server, prompts, batch_size=16, concurrency=8)
        if prompts == small:  # its answers are the large build's: stored, none asked again
            (folder / "out").mkdir()
            shutil.copy(tmp_path / str(large) / "out" / "store.sqlite", folder / "out")
        summary = run_build(load_recipe(path), folder / "out", console=_quiet())
        assert summary["pairs"] == prompts and summary["judge_status"] == {"ok": 2 * prompts}
        peaks[prompts] = _peak_end_of_build(folder / "out")
    added = (large - small) * 2 * TRACE_CHARS
    assert peaks[large] - peaks[small] < added / 4, (peaks, added)
