"""What a publish may touch in its target: only the files its manifest lists.

Through the real CLI (exit status and the one line a user reads) and the loopback Hub
(tests/support/hub_server.py): a folder or Hub repo prefdelta did not publish is refused,
``--overwrite`` replaces only files at prefdelta's paths and deletes nothing of the user's,
a manifest pointing outside its target deletes nothing, two publishes to one folder never
both succeed with one lost, and Hub-only options are refused for a folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from rich.console import Console
from typer.testing import CliRunner

from prefdelta.cli import app
from prefdelta.push import PublishError, publish_build
from support.build_fixtures import build_pairs, make_build
from support.hub_server import HubServer

# huggingface_hub 1.33 PUTs LFS objects with httpx's deprecated `data=<file>`; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

MANIFEST = ".prefdelta-manifest.json"
REPO = "tester/their-dataset"
runner = CliRunner()


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return make_build(tmp_path / "build", n_prompts=12)


def _publish(*args: str) -> tuple[int, list[str]]:
    result = runner.invoke(app, ["publish", *args])
    return result.exit_code, result.output.strip().splitlines()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _project(root: Path) -> dict[str, bytes]:
    """A project folder (not a dataset) that happens to hold a README, a recipe and data/."""
    files = {
        "README.md": b"# my project\n",
        "recipe.yaml": b"name: my-own-recipe\n",
        "data/prompts.jsonl": b'{"problem": "1+1?"}\n',
        "notes.txt": b"mine\n",
        "src/main.py": b"print('hi')\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def _set_recipe_publish(build: Path, publish: str) -> None:
    """Give the build's recipe another ``publish`` section (its summary vouching for it)."""
    recipe = build / "recipe.yaml"
    lines = recipe.read_text().splitlines()
    text = "\n".join(line for line in lines if not line.startswith("publish:"))
    recipe.write_text(f"{text}\npublish: {publish}\n")
    summary = json.loads((build / "summary.json").read_text())
    summary["files"]["recipe.yaml"] = hashlib.sha256(recipe.read_bytes()).hexdigest()
    (build / "summary.json").write_text(json.dumps(summary))


def _manifest(root: Path) -> list[str]:
    return json.loads((root / MANIFEST).read_text())["files"]


# ----------------------------------------------------------------------------- folder


def test_a_project_folder_is_refused_and_overwrite_replaces_only_prefdeltas_paths(
    build: Path, tmp_path: Path
) -> None:
    project = tmp_path / "proj"
    mine = _project(project)

    code, lines = _publish(str(build), "--to", str(project))
    assert code == 1 and len(lines) == 1, lines
    assert f"refusing to publish into {project}" in lines[0]
    assert f"no {MANIFEST}" in lines[0] and "--overwrite" in lines[0]
    assert _files(project) == mine  # nothing replaced, nothing deleted

    code, lines = _publish(str(build), "--to", str(project), "--overwrite")
    assert code == 0, lines
    said = [i for i, line in enumerate(lines) if "prefdelta did not write" in line]
    assert said and "replacing 2 file(s)" in lines[said[0]], lines
    assert "README.md, recipe.yaml" in lines[said[0]]
    assert said[0] < next(i for i, line in enumerate(lines) if line.startswith("published"))
    after = _files(project)
    for name in ("data/prompts.jsonl", "notes.txt", "src/main.py"):
        assert after[name] == mine[name], name  # never deleted, never changed
    assert after["README.md"] != mine["README.md"]  # the card, as asked
    assert after["recipe.yaml"] == (build / "recipe.yaml").read_bytes()
    assert sorted(_manifest(project)) == sorted(
        set(after) - set(mine) - {MANIFEST}
        | {
            "README.md",
            "recipe.yaml",
        }
    )
    pairs = datasets.load_dataset(str(project), "pairs", split="train")
    assert pairs.num_rows == len(build_pairs(build))

    # the folder is prefdelta's now: a republish with another layout needs no --overwrite,
    # removes only what its manifest lists, and keeps the user's files
    code, lines = _publish(str(build), "--to", str(project), "--test-size", "0.3")
    assert code == 0, lines
    code, lines = _publish(str(build), "--to", str(project), "--test-size", "0")
    assert code == 0, lines
    assert not (project / "data/pairs/test-00000-of-00001.parquet").exists()
    for name in ("data/prompts.jsonl", "notes.txt", "src/main.py"):
        assert (project / name).read_bytes() == mine[name], name


def test_a_recipe_publishing_into_another_project_is_refused(
    build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``publish: {folder: ../otherproj}``: the same refusal, from the recipe's target."""
    work = tmp_path / "work"
    work.mkdir()
    other = tmp_path / "otherproj"
    mine = _project(other)
    _set_recipe_publish(build, "{folder: ../otherproj}")
    monkeypatch.chdir(work)
    code, lines = _publish(str(build))
    assert code == 1 and len(lines) == 1, lines
    assert "refusing to publish into ../otherproj" in lines[0] and "--overwrite" in lines[0]
    assert _files(other) == mine


@pytest.mark.parametrize("entry", ["../victim.txt", "ABSOLUTE", "link/victim.txt"])
def test_a_manifest_pointing_outside_its_folder_deletes_nothing(
    build: Path, tmp_path: Path, entry: str
) -> None:
    (tmp_path / "victim.txt").write_text("not prefdelta's")  # ../victim.txt from out
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("not prefdelta's either")
    out = tmp_path / "out"
    code, lines = _publish(str(build), "--to", str(out), "--test-size", "0.3")
    assert code == 0, lines
    (out / "link").symlink_to(outside)
    entry = str(outside / "victim.txt") if entry == "ABSOLUTE" else entry
    (out / MANIFEST).write_text(json.dumps({"files": [*_manifest(out), entry]}))
    before = _files(out)

    code, lines = _publish(str(build), "--to", str(out), "--test-size", "0")
    assert code == 1 and len(lines) == 1, lines
    assert str(out / MANIFEST) in lines[0] and repr(entry) in lines[0], lines
    assert (tmp_path / "victim.txt").read_text() == "not prefdelta's"
    assert (outside / "victim.txt").read_text() == "not prefdelta's either"
    assert _files(out) == before  # not a file of the dataset touched either


def _release_after_first_stage(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The first publish to stage its layout waits there (holding its lock) until the
    returned event is set; every other publish stages as usual."""
    import prefdelta.push.publish as publish_module

    real = publish_module.stage_layout
    go, calls = threading.Event(), []

    def stage(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            assert go.wait(120), "the test never let the first publish go on"
        return real(*args, **kwargs)

    monkeypatch.setattr(publish_module, "stage_layout", stage)
    return go


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def _holds(out: Path, result: Any) -> bool:
    """Whether ``out`` holds exactly the files of ``result``'s publish, and nothing else."""
    return sorted(_manifest(out)) == sorted(result.files) and set(_files(out)) == {
        *result.files,
        MANIFEST,
    }


def test_a_second_publish_to_a_folder_waits_for_the_first(
    build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_build(tmp_path / "other", n_prompts=9, score_seed=5)
    out = tmp_path / "out"
    go = _release_after_first_stage(monkeypatch)
    logs = [io.StringIO(), io.StringIO()]
    first, one = _in_thread(lambda: publish_build(build, out, console=Console(file=logs[0])))
    _wait_for(lambda: any(tmp_path.glob(".out.staging-*")), "the first publish staging")
    second, two = _in_thread(lambda: publish_build(other, out, console=Console(file=logs[1])))
    try:
        _wait_for(lambda: "waiting for another publish to" in logs[1].getvalue(), "a wait")
        assert not out.exists()  # the second one did not go past the lock
    finally:
        go.set()
        first.join(120)
        second.join(120)
    assert "error" not in one and "error" not in two, (one, two)
    assert one["result"].changed and two["result"].changed
    # the second publish ran after the first: its version is there, whole
    assert _holds(out, two["result"])
    rows = datasets.load_dataset(str(out), "pairs", split="train")
    assert sorted(rows["pair_id"]) == sorted(r["pair_id"] for r in build_pairs(other))
    assert not list(tmp_path.glob(".out.*"))  # no staging folder, no lock file left


def test_a_second_publish_that_cannot_wait_fails_in_one_line(
    build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefdelta.push.target as target_module

    monkeypatch.setattr(target_module, "LOCK_WAIT_S", 0.0)
    other = make_build(tmp_path / "other", n_prompts=9, score_seed=5)
    out = tmp_path / "out"
    go = _release_after_first_stage(monkeypatch)
    first, one = _in_thread(lambda: publish_build(build, out, console=Console(file=io.StringIO())))
    try:
        _wait_for(lambda: any(tmp_path.glob(".out.staging-*")), "the first publish staging")
        code, lines = _publish(str(other), "--to", str(out))
    finally:
        go.set()
        first.join(120)
    assert code == 1 and len(lines) == 1, lines
    assert f"another publish to {out} (pid {os.getpid()}) still holds it" in lines[0]
    assert "error" not in one and one["result"].changed
    assert _holds(out, one["result"])  # the first one's version, whole; nothing lost


def test_hub_only_options_are_refused_for_a_folder(build: Path, tmp_path: Path) -> None:
    out = tmp_path / "folder"
    for flag in (["--revision", "dev"], ["--no-tag"], ["--public"]):
        code, lines = _publish(str(build), "--to", str(out), *flag)
        assert code == 1 and len(lines) == 1, lines
        assert f"{flag[0]} applies to Hub targets only" in lines[0]
    with pytest.raises(PublishError, match="--revision applies to Hub targets only"):
        publish_build(build, out, revision="dev")
    assert not out.exists()
    # the recipe's Hub options are for its own Hub target, not for a folder given instead
    _set_recipe_publish(build, "{repo_id: tester/synthetic, revision: dev, tag: false}")
    code, lines = _publish(str(build), "--to", str(out))
    assert code == 0 and lines[-1] == f"published: {out}", lines


def test_a_recipe_with_an_empty_folder_target_does_not_validate(tmp_path: Path) -> None:
    from support.build_fixtures import recipe_text

    text = recipe_text("synthetic", 0, ("factuality",), "drop")
    lines = [line for line in text.splitlines() if not line.startswith("publish:")]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("\n".join([*lines, 'publish: {folder: ""}']) + "\n")
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 1
    assert f"{recipe}:{len(lines) + 1}: publish.folder: must name a folder" in result.output


# ----------------------------------------------------------------------------- Hub


def _their_repo() -> dict[str, bytes]:
    """A Hub dataset someone made without prefdelta."""
    files = {
        "README.md": b"---\nlicense: mit\n---\n# their dataset\n",
        "data/train.csv": b"a,b\n1,2\n",
        "data/test.csv": b"a,b\n3,4\n",
        "plots/figure1.png": b"\x89PNG\r\n\x1a\nnot really",
        "scripts/make.py": b"print('made')\n",
    }
    api = HfApi()
    api.create_repo(REPO, repo_type="dataset", private=False)
    api.create_commit(
        REPO,
        [CommitOperationAdd(name, data) for name, data in files.items()],
        commit_message="their data",
        repo_type="dataset",
    )
    return files


def _repo_files(revision: str = "main") -> dict[str, bytes]:
    api = HfApi()
    out = {}
    for name in api.list_repo_files(REPO, repo_type="dataset", revision=revision):
        path = api.hf_hub_download(REPO, name, repo_type="dataset", revision=revision)
        out[name] = Path(path).read_bytes()
    return out


def _commits() -> list[str]:
    return [c.commit_id for c in HfApi().list_repo_commits(REPO, repo_type="dataset")]


def test_a_hub_dataset_prefdelta_did_not_make_keeps_its_data(build: Path, hub: HubServer) -> None:
    theirs = _their_repo()
    before = _commits()

    code, lines = _publish(str(build), "--to", REPO, "--public")
    assert code == 1 and len(lines) == 1, lines
    assert f"refusing to publish into {REPO}" in lines[0] and "--overwrite" in lines[0]
    assert "data/test.csv" in lines[0] or "and 2 more" in lines[0]
    assert _commits() == before

    code, lines = _publish(str(build), "--to", REPO, "--public", "--overwrite")
    assert code == 0, lines
    said = next(i for i, line in enumerate(lines) if "prefdelta did not write" in line)
    assert f"replacing 1 file(s) prefdelta did not write in {REPO}: README.md" in lines[said]
    assert said < next(i for i, line in enumerate(lines) if line.startswith("committing"))
    assert any("deleting 0 stale file(s)" in line for line in lines), lines
    after = _repo_files()
    for name in ("data/train.csv", "data/test.csv", "plots/figure1.png", "scripts/make.py"):
        assert after[name] == theirs[name], name
    assert after["README.md"] != theirs["README.md"]
    listed = json.loads(after[MANIFEST])["files"]
    assert "README.md" in listed and not set(listed) & (set(theirs) - {"README.md"})
    assert len(_commits()) == len(before) + 1  # manifest and data in one commit

    # prefdelta's now: a new layout deletes its own stale file, never theirs
    assert _publish(str(build), "--to", REPO, "--test-size", "0.3")[0] == 0
    code, lines = _publish(str(build), "--to", REPO, "--test-size", "0")
    assert code == 0 and any("deleting 1 stale file(s)" in line for line in lines), lines
    after = _repo_files()
    assert "data/pairs/test-00000-of-00001.parquet" not in after
    for name in ("data/train.csv", "data/test.csv", "plots/figure1.png", "scripts/make.py"):
        assert after[name] == theirs[name], name


def test_a_hub_dataset_published_without_a_manifest_needs_overwrite_once(
    build: Path, hub: HubServer
) -> None:
    first = publish_build(build, REPO, private=False, tag=False)
    assert MANIFEST in HfApi().list_repo_files(REPO, repo_type="dataset")
    HfApi().create_commit(  # what an older prefdelta left: the dataset, no manifest
        REPO, [CommitOperationDelete(MANIFEST)], commit_message="older", repo_type="dataset"
    )
    before = _commits()
    code, lines = _publish(str(build), "--to", REPO, "--no-tag")
    assert code == 1 and len(lines) == 1, lines
    assert "an older prefdelta published" in lines[0] and "--overwrite once" in lines[0]
    assert _commits() == before

    code, lines = _publish(str(build), "--to", REPO, "--no-tag", "--overwrite")
    assert code == 0, lines
    assert json.loads(_repo_files()[MANIFEST])["files"] == sorted(first.files)
    unchanged = publish_build(build, REPO, tag=False)  # no --overwrite needed any more
    assert not unchanged.changed and len(_commits()) == len(before) + 1


@pytest.mark.parametrize("entry", ["../victim.txt", "/etc/victim.txt", "data/../../x"])
def test_a_hub_manifest_pointing_outside_the_repo_is_refused(
    build: Path, hub: HubServer, entry: str
) -> None:
    publish_build(build, REPO, private=False, tag=False, test_size=0.3)
    listed = json.loads(_repo_files()[MANIFEST])["files"]
    HfApi().create_commit(
        REPO,
        [CommitOperationAdd(MANIFEST, json.dumps({"files": [*listed, entry]}).encode())],
        commit_message="edited by hand",
        repo_type="dataset",
    )
    before = _commits()
    code, lines = _publish(str(build), "--to", REPO, "--no-tag", "--test-size", "0")
    assert code == 1 and len(lines) == 1, lines
    assert f"{MANIFEST} of {REPO}@" in lines[0] and repr(entry) in lines[0], lines
    assert _commits() == before
