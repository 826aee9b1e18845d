"""The reliability campaign's reproductions, one row each: what a user did, and the one-line
error or the safe outcome they now get.

Each row runs the real CLI the way the campaign did (in this process through typer's runner,
or as a process of its own where a signal is sent) and asserts the exit status, that the
user reads one line and no traceback, and that nothing of theirs was replaced or lost. The
detailed tests of each fix live beside their code; this table keeps the campaign whole.
"""

from __future__ import annotations

import fcntl
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import CommitOperationAdd, HfApi
from typer.testing import CliRunner

from prefdelta.cli import app
from prefdelta.push import publish_build
from support.api_build import interrupt_build, write_api_recipe
from support.argilla_fixtures import not_argilla
from support.build_fixtures import make_build
from support.model_fixtures import ChatServer, chat_server  # noqa: F401  (a fixture)
from support.store_fixtures import InspectableStore

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

SECRET = "campaign-s3cr3t"


@dataclass
class Outcome:
    code: int
    lines: list[str]  # what the user read on stderr (and stdout), stripped
    text: str  # all of it


def cli(*args: str, env: dict[str, str] | None = None) -> Outcome:
    result = CliRunner().invoke(app, list(args), env=env)
    text = result.output
    return Outcome(result.exit_code, [ln for ln in text.strip().splitlines() if ln], text)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def one_line_error(out: Outcome, *needles: str) -> None:
    assert out.code == 1, out.text
    assert len(out.lines) == 1, out.text
    assert "Traceback" not in out.text
    for needle in needles:
        assert needle in out.lines[0], out.lines[0]


# ----------------------------------------------------------------------------- the rows


def folder_publish_into_a_project(tmp: Path, **_: Any) -> None:
    """1. A project folder (README, recipe, data/, notes, src/) is not a dataset to replace."""
    project = tmp / "proj"
    for name in ("README.md", "recipe.yaml", "data/prompts.jsonl", "notes.txt", "src/main.py"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(f"mine: {name}\n")
    before = files(project)
    out = cli("publish", str(make_build(tmp / "build", n_prompts=8)), "--to", str(project))
    one_line_error(out, f"refusing to publish into {project}", "--overwrite")
    assert files(project) == before


def hub_publish_into_a_dataset_prefdelta_did_not_make(tmp: Path, hub: Any, **_: Any) -> None:
    """2. A Hub dataset with CSVs, a figure and a script keeps them all."""
    api = HfApi()
    repo = "tester/campaign-theirs"
    api.create_repo(repo, repo_type="dataset")
    theirs = {
        "README.md": b"# theirs\n",
        "data/train.csv": b"a,b\n1,2\n",
        "data/test.csv": b"a,b\n3,4\n",
        "plots/figure1.png": b"\x89PNG not really",
        "scripts/make.py": b"print('made')\n",
    }
    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=b) for p, b in theirs.items()]
    head = api.create_commit(repo, ops, commit_message="theirs", repo_type="dataset").oid
    out = cli("publish", str(make_build(tmp / "build", n_prompts=8)), "--to", repo)
    one_line_error(out, f"refusing to publish into {repo}", "--overwrite")
    assert api.dataset_info(repo).sha == head  # no commit at all
    assert set(theirs) <= set(api.list_repo_files(repo, repo_type="dataset"))


def manifest_pointing_outside_its_folder(tmp: Path, **_: Any) -> None:
    """3. ``../victim.txt`` in the manifest: the next publish refuses, deleting nothing."""
    target, victim = tmp / "published", tmp / "victim.txt"
    victim.write_text("keep me\n")
    assert cli("publish", str(make_build(tmp / "b1", n_prompts=8)), "--to", str(target)).code == 0
    manifest = target / ".prefdelta-manifest.json"
    data = json.loads(manifest.read_text())
    data["files"].append("../victim.txt")
    manifest.write_text(json.dumps(data))
    out = cli("publish", str(make_build(tmp / "b2", n_prompts=9, seed=1)), "--to", str(target))
    one_line_error(out, "../victim.txt")
    assert victim.read_text() == "keep me\n"


def password_in_a_url(tmp: Path, **_: Any) -> None:
    """4. ``base_url: http://u:${PASS}@host/v1``: inspect shows the reference, never the value."""
    (tmp / "prompts.jsonl").write_text('{"problem": "What is 1 plus 1?"}\n')
    url = "http://u:${PASS}@127.0.0.1:9/v1"
    (tmp / "r.yaml").write_text(
        "name: secret\nprompts: {path: prompts.jsonl}\ngenerators:\n"
        f'  a: {{model: m-a, backend: openai, base_url: "{url}"}}\n'
        f'  b: {{model: m-b, backend: openai, base_url: "{url}"}}\n'
        "pairing: {chosen: a, rejected: [b]}\n"
        f'judge: {{model: j, backend: openai, base_url: "{url}"}}\n'
    )
    out = cli("inspect", str(tmp / "r.yaml"), env={"PASS": SECRET})
    assert out.code == 0, out.text
    assert SECRET not in out.text and "${PASS}" in out.text


def damaged_store(tmp: Path, server: ChatServer, **_: Any) -> None:
    """5. A store.sqlite of garbage: one line naming it and the way out; the file is kept."""
    recipe = write_api_recipe(tmp / "recipe", server, prompts=2)
    build = tmp / "out"
    build.mkdir()
    (build / "store.sqlite").write_bytes(b"this is not a database" * 100)
    out = cli("build", str(recipe), "-o", str(build), "--no-publish")
    one_line_error(out, "store.sqlite", "--repair")
    assert (build / "store.sqlite").read_bytes().startswith(b"this is not a database")
    assert server.state.bodies == []  # found before any call was made


def sweep_into_a_users_folder(tmp: Path, **_: Any) -> None:
    """6. A sweep's output_dir holding the user's results.csv: refused, the file kept."""
    (tmp / "train.yaml").write_text(f"dataset: {tmp / 'no-such-dataset'}\n")
    mine = tmp / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my,own\n")
    (tmp / "s.yaml").write_text(f"name: s\ntrain: train.yaml\noutput_dir: {mine}\n")
    one_line_error(cli("sweep", str(tmp / "s.yaml")), f"output_dir: {mine} is not empty")
    assert (mine / "results.csv").read_text() == "my,own\n"


def a_list_as_learning_rate(tmp: Path, **_: Any) -> None:
    """7. ``learning_rate: [1e-6, 2e-6]``: one line naming the file, the key and the type."""
    config = tmp / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "trainer": "dpo",
                "dataset": str(tmp / "data"),
                "output_dir": str(tmp / "o"),
                "learning_rate": [1, 2],
            }
        )
    )
    one_line_error(cli("train", str(config)), str(config), "learning_rate", "expected a number")


def review_against_a_server_that_is_not_argilla(tmp: Path, **_: Any) -> None:
    """8. A web server that is not Argilla, and ``--n 0``: one line each, before any push."""
    published = tmp / "published"
    publish_build(make_build(tmp / "build", n_prompts=8), published)
    with not_argilla(404, "<html>Not Found</html>") as url:
        out = cli("review", "push", str(published), "--api-url", url, "--api-key", "k")
    one_line_error(out, f"{url} did not answer as an Argilla server", "prefdelta review serve")
    out = cli("review", "push", str(published), "--n", "0", "--api-url", "http://127.0.0.1:9")
    one_line_error(out, "--n")


def ctrl_c_during_a_build(tmp: Path, server: ChatServer, **_: Any) -> None:
    """9. Ctrl-C once answers are stored: exit 130, one line, nothing judged or reported
    as failed; what was answered stays stored."""
    server.state.delay_s = 0.5  # the build cannot outrun the signal
    recipe = write_api_recipe(tmp / "recipe", server, prompts=8)
    build = tmp / "out"
    cmd = [sys.executable, "-m", "prefdelta", "build", str(recipe), "-o", str(build)]
    log = tmp / "build.log"
    store = build / "store.sqlite"
    code = interrupt_build(cmd, store, log)
    text = log.read_text()
    assert code == 130, text
    assert "interrupted; rerun to resume" in text and "fail" not in text.lower(), text
    assert "Traceback" not in text
    assert not any(b["model"] == "the-judge" for b in server.state.bodies)
    assert InspectableStore(store).count_all("generation") > 0


def an_empty_generation(tmp: Path, server: ChatServer, **_: Any) -> None:
    """10. A generator answering "": the trace is kept as ``empty_trace``, counted, never
    judged, and no published pair has an empty side."""
    recipe = write_api_recipe(tmp / "recipe", server, prompts=2)
    server.state.blank_when = {"Briefly. What is 1 plus 1?": ""}
    build = tmp / "out"
    out = cli("build", str(recipe), "-o", str(build), "--no-publish")
    assert out.code == 0, out.text
    traces = pq.read_table(build / "traces.parquet").to_pylist()
    assert [t["judge_status"] for t in traces].count("empty_trace") == 1
    pairs = pq.read_table(build / "pairs.parquet").to_pylist()
    assert pairs and all(p["chosen"][-1]["content"] and p["rejected"][-1]["content"] for p in pairs)
    assert json.loads((build / "summary.json").read_text())["empty_traces"] == {"weak": 1}


def two_publishes_to_one_folder(tmp: Path, monkeypatch: pytest.MonkeyPatch, **_: Any) -> None:
    """11. A publish while another holds the folder: it says so in one line (here it may
    not wait); the folder is untouched."""
    import prefdelta.push.target as target_module

    monkeypatch.setattr(target_module, "LOCK_WAIT_S", 0.0)
    target = tmp / "out"
    with (tmp / ".out.publish-lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("12345")
        held.flush()
        out = cli("publish", str(make_build(tmp / "build", n_prompts=8)), "--to", str(target))
    one_line_error(out, f"another publish to {target}", "still holds it")
    assert not target.exists()


ROWS: list[tuple[str, Callable[..., None]]] = [
    ("folder publish into a project", folder_publish_into_a_project),
    ("Hub publish into a dataset prefdelta did not make", hub_publish_into_a_dataset_prefdelta_did_not_make),
    ("a manifest pointing outside its folder", manifest_pointing_outside_its_folder),
    ("a password in a base_url", password_in_a_url),
    ("a damaged store", damaged_store),
    ("a sweep into a user's folder", sweep_into_a_users_folder),
    ("a list as learning_rate", a_list_as_learning_rate),
    ("review against a server that is not Argilla", review_against_a_server_that_is_not_argilla),
    ("Ctrl-C during a build", ctrl_c_during_a_build),
    ("an empty generation", an_empty_generation),
    ("two publishes to one folder", two_publishes_to_one_folder),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("case", "row"), ROWS, ids=[case for case, _ in ROWS])
def test_the_campaigns_reproductions(
    case: str,
    row: Callable[..., None],
    tmp_path: Path,
    hub: Any,
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    row(tmp_path, hub=hub, server=chat_server, monkeypatch=monkeypatch)
