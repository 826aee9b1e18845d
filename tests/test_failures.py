"""Faults a user meets on their own machine, through the real CLI: a damaged store, a full
or read-only disk, an output path under a file; and secrets kept out of every output.

Each fault is one line on stderr that names the file and says what to do, exit status 1;
``--debug`` (or the log file the line names) has the traceback. Builds here call a
loopback chat server, so they take seconds, not a model's minutes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefdelta.builders.store import ResultStore, repair_store
from prefdelta.cli import app
from support.model_fixtures import ChatServer, chat_server  # noqa: F401  (a fixture)
from support.store_fixtures import InspectableStore

SECRET = "s3cr3t-value"
PROMPTS = 8


def write_recipe(folder: Path, url: str, prompts: int = PROMPTS) -> Path:
    """Two generators and a judge on ``url``; long prompts, so the store spans many pages."""
    folder.mkdir(parents=True, exist_ok=True)
    pad = "Think step by step and show every step of the work. " * 30
    rows = [{"problem": f"Problem {i}. {pad}What is {i} plus {i}?"} for i in range(prompts)]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = folder / "recipe.yaml"
    path.write_text(
        "name: faults\n"
        "prompts: {path: prompts.jsonl}\n"
        "generators:\n"
        f'  a: {{model: gen-a, backend: openai, base_url: "{url}"}}\n'
        f'  b: {{model: gen-b, backend: openai, base_url: "{url}"}}\n'
        "pairing: {chosen: a, rejected: [b]}\n"
        f'judge: {{model: judge, backend: openai, base_url: "{url}", dimensions: [factuality]}}\n'
    )
    return path


def with_password(url: str) -> str:
    """``url`` with a user and a ``${PASS}`` password in it, as a recipe would write it."""
    return url.replace("http://", "http://u:${PASS}@")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, env: dict[str, str] | None = None) -> Run:
    """The command with its stdout and stderr apart (in this process: the bug test below
    runs one in its own)."""
    result = CliRunner().invoke(app, list(args), env={"PASS": SECRET, **(env or {})})
    return Run(result.exit_code, result.stdout, result.stderr)


def cli_process(*args: str) -> Run:
    """The command in a process of its own, as a user runs it (what reaches the terminal
    after the command ends, the interpreter's traceback hook included)."""
    result = subprocess.run(
        [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", "prefdelta", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PASS": SECRET},
        timeout=300,
    )
    return Run(result.returncode, result.stdout, result.stderr)


def one_line(result: Run, *expected: str, after_progress: bool = False) -> str:
    """The error line; ``after_progress``: a build that ran says its progress before it."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 or after_progress, result.stderr
    for text in expected:
        assert text in lines[-1], lines[-1]
    return lines[-1]


def damaged_store(folder: Path, how: str) -> Path:
    """A store with rows in it, then truncated or overwritten with garbage."""
    path = folder / "store.sqlite"
    store = ResultStore(path)
    store.put_many("generation", {f"k{i}": {"trace": "x" * 400} for i in range(100)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if how == "truncated" else os.urandom(len(data)))
    return path


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_store_is_one_line_for_build_and_inspect(tmp_path: Path, how: str) -> None:
    recipe = write_recipe(tmp_path, "http://127.0.0.1:9/v1")
    out = tmp_path / "out"
    recipe.write_text(recipe.read_text() + f"output_dir: {out}\n")  # inspect reads its store
    out.mkdir()
    store = damaged_store(out, how)
    for command in ("build", "inspect"):
        one_line(
            cli(command, str(recipe)),
            f"{store} is damaged",
            "run `prefdelta build RECIPE --repair`",
            f"or move the build folder {out} aside and rebuild",
        )
    assert store.is_file() and not list(out.glob("store.sqlite.corrupt-*"))  # nothing moved
    debug = cli("--debug", "build", str(recipe))
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "StoreCorruptError" in debug.stderr
    assert "│" not in debug.stderr  # a plain traceback, not rich's boxes of locals


def test_repair_keeps_the_garbage_aside_and_starts_a_fresh_store(tmp_path: Path) -> None:
    path = damaged_store(tmp_path, "garbage")
    damaged = path.read_bytes()
    report = repair_store(path)
    assert report is not None and sum(report.salvaged.values()) == 0
    assert report.aside.read_bytes() == damaged  # kept as it was, beside the store
    assert report.aside.name.startswith("store.sqlite.corrupt-")
    ResultStore(path).check()  # a fresh store that reads back
    assert InspectableStore(path).count_all("generation") == 0
    again = damaged_store(tmp_path, "garbage")
    second = repair_store(again)
    assert second is not None and second.aside != report.aside and report.aside.is_file()
    assert repair_store(path) is None  # a sound store is left alone


def _damage_a_page_of(path: Path, table: str) -> None:
    """Overwrite one leaf page in the middle of ``table`` with garbage."""
    with InspectableStore(path)._read_only() as db:
        size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = [
            p
            for (p,) in db.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
                (table,),
            )
        ]
    assert len(pages) >= 3, pages
    with path.open("r+b") as f:
        f.seek((pages[len(pages) // 2] - 1) * size)
        f.write(b"\xa5" * size)


def test_repair_salvages_the_readable_rows_and_the_rebuild_redoes_only_the_rest(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    recipe = write_recipe(tmp_path, chat_server.url)
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(app, ["build", str(recipe), "-o", str(out)])
    assert first.exit_code == 0, first.output
    store = out / "store.sqlite"
    planned = 2 * PROMPTS
    assert InspectableStore(store).count_all("generation") == planned
    judgments = InspectableStore(store).count_all("judgment")
    _damage_a_page_of(store, "generation")

    failed = cli("build", str(recipe), "-o", str(out))
    one_line(failed, f"{store} is damaged", "--repair")

    chat_server.state.bodies.clear()
    repaired = runner.invoke(app, ["build", str(recipe), "-o", str(out), "--repair"])
    assert repaired.exit_code == 0, repaired.output
    said = re.search(
        r"salvaged (\d+) row\(s\) \(generation (\d+), judgment (\d+), failure 0\); "
        r"(\d+) unreadable row\(s\) lost; the damaged file is kept as (\S+)",
        " ".join(repaired.output.split()),
    )
    assert said, repaired.output
    kept, lost = int(said.group(2)), int(said.group(4))
    assert 0 < kept < planned and kept + lost == planned
    assert int(said.group(3)) == judgments  # the judgment table was not touched
    assert Path(said.group(5)).is_file() and Path(said.group(5)).name.startswith(
        "store.sqlite.corrupt-"
    )
    # only the lost generations are asked again; their traces are the same, so their
    # judgments were salvaged too and the judge is not asked at all
    models = [body["model"] for body in chat_server.state.bodies]
    assert len([m for m in models if m.startswith("gen-")]) == lost
    assert "judge" not in models
    assert InspectableStore(store).count_all("generation") == planned


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_is_one_line_and_the_rerun_finishes(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    """The tables' write fails: one line naming the file, the traceback in the build's
    log (with no secret in it), no half-written table; the rerun makes no model call."""
    import pyarrow.parquet as pq

    recipe = write_recipe(tmp_path, with_password(chat_server.url))
    out = tmp_path / "out"
    real_writer = pq.ParquetWriter

    def fail(where: object, *args: object, **kwargs: object) -> object:
        if str(where).startswith(str(out)):  # the build's tables; distilabel's own writes go on
            raise OSError(code, os.strerror(code), str(where))
        return real_writer(where, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetWriter", fail)
    result = cli("build", str(recipe), "-o", str(out))
    advice = "free some space" if code == errno.ENOSPC else "choose a folder on a writable disk"
    line = one_line(
        result, f"{out}/.traces.parquet.tmp: {os.strerror(code)}; {advice}", after_progress=True
    )
    log = Path(line.split("the traceback is in ")[1].rstrip(")"))
    assert log.parent == out / "logs" and "Traceback" in log.read_text()
    assert not list(out.glob("*.parquet*")) and not (out / "summary.json").exists()
    everything = (
        result.stdout
        + result.stderr
        + "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    )
    assert SECRET not in everything

    monkeypatch.setattr(pq, "ParquetWriter", real_writer)
    chat_server.state.bodies.clear()
    again = cli("build", str(recipe), "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert chat_server.state.bodies == [] and (out / "summary.json").is_file()


def test_an_output_path_under_a_file_is_one_line(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "http://127.0.0.1:9/v1")
    (tmp_path / "some_file").write_text("not a folder")
    where = tmp_path / "some_file" / "x"
    one_line(
        cli("build", str(recipe), "-o", str(where)),
        str(where),
        "a part of that path is a file, not a folder; choose another path",
        "--debug",
    )
    debug = cli("--debug", "build", str(recipe), "-o", str(where))
    assert debug.returncode == 1 and "NotADirectoryError" in debug.stderr
    debug = cli("build", str(recipe), "-o", str(where), env={"PREFDELTA_DEBUG": "1"})
    assert "Traceback (most recent call last)" in debug.stderr
    assert (tmp_path / "some_file").read_text() == "not a folder"


def test_a_password_in_a_url_reaches_no_output(tmp_path: Path) -> None:
    """inspect shows the reference as written; a failing build's traceback (``--debug``),
    its line and the build folder never hold the value."""
    recipe = write_recipe(tmp_path, with_password("http://127.0.0.1:9/v1"))
    shown = cli("inspect", str(recipe))
    assert shown.returncode == 0, shown.stderr
    assert "base_url: http://u:${PASS}@127.0.0.1:9/v1" in shown.stdout
    assert SECRET not in shown.stdout + shown.stderr
    out = tmp_path / "out"
    out.mkdir()
    damaged_store(out, "garbage")
    for debug in ([], ["--debug"]):
        failed = cli_process(*debug, "build", str(recipe), "-o", str(out))
        assert failed.returncode == 1 and SECRET not in failed.stdout + failed.stderr
    assert "Traceback" in failed.stderr
    files = [p for p in out.rglob("*") if p.is_file() and "store.sqlite" not in p.name]
    assert all(SECRET not in p.read_text(errors="replace") for p in files)


def test_a_bug_shows_a_plain_traceback_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an error a user meets: the traceback stays, but plain (distilabel's rich hook
    would print every frame's locals, the resolved recipe among them) and redacted."""
    recipe = write_recipe(tmp_path, with_password("http://127.0.0.1:9/v1"))
    bug = (
        "import sys, distilabel, prefdelta.builders.build as b\n"
        "from prefdelta.recipe import load_recipe\n"
        "def boom(recipe, *a, **k):\n"
        "    raise KeyError(recipe.judge.base_url)\n"
        "b.run_build = boom\n"
        "from prefdelta.cli import app\n"
        f"app(['build', {str(recipe)!r}], prog_name='prefdelta')\n"
    )
    result = cli_process("-c", bug)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "KeyError" in result.stderr
    assert "u:${PASS}@127.0.0.1" in result.stderr and SECRET not in result.stderr
    assert "│" not in result.stderr and "this is a bug in prefdelta" in result.stderr


def test_redact_masks_url_passwords_and_resolved_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefdelta.recipe import load_recipe
    from prefdelta.redact import redact

    assert redact("at postgres://admin:hunter2@db:5432/x") == "at postgres://admin:***@db:5432/x"
    assert (
        redact("http://u:${PASS}@h/v1 and http://h/v1") == "http://u:${PASS}@h/v1 and http://h/v1"
    )
    monkeypatch.setenv("FAULTS_TOKEN", "tok-abcdef-123")
    monkeypatch.setenv("FAULTS_N", "7")  # a number, never a secret: counts stay readable
    path = write_recipe(tmp_path, "http://127.0.0.1:9/v1?t=${FAULTS_TOKEN}")
    path.write_text(path.read_text().replace("name: faults", "name: faults-${FAULTS_N}"))
    load_recipe(path)
    assert redact("GET /v1?t=tok-abcdef-123 failed 7 times") == (
        "GET /v1?t=${FAULTS_TOKEN} failed 7 times"
    )


def test_another_error_type_is_one_line_once_registered() -> None:
    """How a helper adds a library's error: by type or by name, without importing it."""
    from prefdelta import errors

    class QuotaExceeded(Exception):
        pass

    name = f"{QuotaExceeded.__module__}.{QuotaExceeded.__qualname__}"
    assert errors.user_error_lines(QuotaExceeded("over")) is None  # a bug until registered
    errors.register_user_error(name, lambda exc: f"the quota is spent ({exc}); wait an hour")
    # (the type exists in this test only, so it stays registered harmlessly)
    assert errors.user_error_lines(QuotaExceeded("over")) == [
        "the quota is spent (over); wait an hour"
    ]
