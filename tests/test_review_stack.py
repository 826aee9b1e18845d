"""The local Argilla stack, for real: argilla-server 2.8.0 on osmem-server and fakeredis, driven
by the argilla 2.8.0 SDK from prefdelta's env. No mocks.

Each call that osmem-server cannot serve natively goes through prefdelta's search engine
(src/prefdelta/review/server_scripts/argilla_engine.py) and is checked by reading the result back through a
search that the index answers: response submit/update/delete and suggestion delete (scripted
updates upstream) and similarity search (knn upstream).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import prefdelta.review.server_venv as venv_module
from prefdelta.review.server_venv import ArgillaServerNotInstalled
from prefdelta.review.stack import ArgillaStack
from support.argilla_fixtures import BOOT_LIMIT_S, argilla_stack, eventually, new_stack  # noqa: F401


@pytest.fixture(scope="module")
def client(argilla_stack: ArgillaStack) -> Any:  # noqa: F811
    import argilla as rg

    return rg.Argilla(api_url=argilla_stack.api_url, api_key=argilla_stack.api_key)


@pytest.fixture(scope="module")
def dataset(client: Any) -> Any:
    """A published review dataset: 4 pairs with suggestions, metadata and a 3-d vector each."""
    import argilla as rg

    workspace = rg.Workspace(name="review", client=client).create()
    workspace.add_user(client.me)
    settings = rg.Settings(
        fields=[
            rg.TextField(name="prompt"),
            rg.TextField(name="chosen"),
            rg.TextField(name="rejected"),
        ],
        questions=[rg.LabelQuestion(name="preferred", labels=["chosen", "rejected", "tie"])],
        metadata=[
            rg.TermsMetadataProperty(name="generator"),
            rg.FloatMetadataProperty(name="delta"),
        ],
        vectors=[rg.VectorField(name="emb", dimensions=3)],
    )
    ds = rg.Dataset(name="pairs", workspace=workspace, settings=settings, client=client).create()
    rows = [
        ("p0", "What is 2 + 2?", "4", "5", "r1", 2.5, [1.0, 0.0, 0.0], "chosen"),
        ("p1", "Capital of France?", "Paris", "Lyon", "r1", 1.0, [0.9, 0.1, 0.0], "chosen"),
        ("p2", "Derivative of x^2?", "2x", "x", "s1", 0.5, [0.0, 1.0, 0.0], "tie"),
        ("p3", "Is 7 prime?", "yes", "no", "s1", -0.5, [0.0, 0.0, 1.0], "rejected"),
    ]
    ds.records.log(
        [
            rg.Record(
                id=rid,
                fields={"prompt": prompt, "chosen": chosen, "rejected": rejected},
                metadata={"generator": generator, "delta": delta},
                vectors={"emb": vector},
                suggestions=[rg.Suggestion("preferred", label, score=0.8, agent="judge")],
            )
            for rid, prompt, chosen, rejected, generator, delta, vector, label in rows
        ]
    )
    return ds


def _ids(records: Any) -> list[str]:
    return [record.id for record in records]


def _search(dataset: Any, *conditions: tuple[str, str, Any], query: str | None = None) -> list[str]:
    import argilla as rg

    filter_ = rg.Filter(list(conditions)) if conditions else None
    return sorted(_ids(dataset.records(query=rg.Query(query=query, filter=filter_))))


def _record(dataset: Any, external_id: str) -> Any:
    (record,) = dataset.records(query=rg_query(("id", "==", external_id)))
    return record


def rg_query(*conditions: tuple[str, str, Any]) -> Any:
    import argilla as rg

    return rg.Query(filter=rg.Filter(list(conditions)))


# ------------------------------------------------------------------------------ the stack


def test_boot_is_under_a_minute(argilla_stack: ArgillaStack, record_property: Any) -> None:  # noqa: F811
    assert argilla_stack.boot_seconds is not None
    record_property("argilla_boot_seconds", round(argilla_stack.boot_seconds, 1))
    print(f"Argilla stack booted in {argilla_stack.boot_seconds:.1f} s")
    assert argilla_stack.boot_seconds < BOOT_LIMIT_S


def test_serves_status_and_web_ui(argilla_stack: ArgillaStack) -> None:  # noqa: F811
    import urllib.request

    with urllib.request.urlopen(f"{argilla_stack.api_url}/api/v1/status") as response:
        status = json.load(response)
    assert status["version"] == "2.8.0"
    assert status["search_engine"]["cluster_name"] == "osmem"
    with urllib.request.urlopen(f"{argilla_stack.api_url}/sign-in") as response:
        assert b"<html" in response.read().lower()


def test_owner_can_sign_in_with_password(argilla_stack: ArgillaStack) -> None:  # noqa: F811
    import urllib.parse
    import urllib.request

    body = urllib.parse.urlencode(
        {"username": argilla_stack.username, "password": argilla_stack.password}
    ).encode()
    with urllib.request.urlopen(f"{argilla_stack.api_url}/api/v1/token", data=body) as response:
        assert json.load(response)["access_token"]


def test_missing_server_venv_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(
        ArgillaServerNotInstalled, match=r"run `bash scripts/install-argilla-server\.sh`"
    ):
        ArgillaStack(venv=tmp_path / "absent")


@pytest.fixture
def no_venv_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(venv_module.VENV_ENV, raising=False)
    return monkeypatch


def _project(folder: Path, name: str = "prefdelta") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n')
    return folder


def test_the_env_var_names_the_server_venv_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".venv-argilla").mkdir()
    monkeypatch.setenv(venv_module.VENV_ENV, str(tmp_path / "elsewhere"))
    assert venv_module.default_venv(tmp_path) == tmp_path / "elsewhere"


def test_the_server_venv_in_the_working_directory(
    tmp_path: Path, no_venv_env: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".venv-argilla").mkdir()
    assert venv_module.default_venv(tmp_path) == tmp_path / ".venv-argilla"


def test_the_server_venv_beside_the_project_the_working_directory_is_in(
    tmp_path: Path, no_venv_env: pytest.MonkeyPatch
) -> None:
    no_venv_env.setattr(venv_module, "_checkout_root", lambda: None)  # as from a wheel
    project = _project(tmp_path / "proj")
    _project(project / "vendored" / "other", name="other")
    inside = project / "vendored" / "other" / "deep"
    inside.mkdir()
    # not made yet: the error names where the install script puts it
    assert venv_module.default_venv(inside) == project / ".venv-argilla"
    (project / ".venv-argilla").mkdir()
    assert venv_module.default_venv(inside) == project / ".venv-argilla"


def test_no_server_venv_anywhere_is_one_line_naming_the_env_var_and_the_script(
    tmp_path: Path, no_venv_env: pytest.MonkeyPatch
) -> None:
    no_venv_env.setattr(venv_module, "_checkout_root", lambda: None)  # as from a wheel
    _project(tmp_path, name="not-prefdelta")
    with pytest.raises(ArgillaServerNotInstalled) as caught:
        venv_module.default_venv(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert venv_module.VENV_ENV in message
    assert "scripts/install-argilla-server.sh" in message


def test_a_checkout_finds_its_own_server_venv(
    tmp_path: Path, no_venv_env: pytest.MonkeyPatch
) -> None:
    """Run from this checkout (src/ on the path), elsewhere: the checkout's .venv-argilla."""
    checkout = Path(venv_module.__file__).resolve().parents[3]
    assert venv_module.default_venv(tmp_path) == checkout / ".venv-argilla"


# ------------------------------------------------------------------------------ the review flow


def test_records_read_back_with_suggestions_and_metadata(dataset: Any) -> None:
    records = {record.id: record for record in dataset.records(with_vectors=True)}
    assert sorted(records) == ["p0", "p1", "p2", "p3"]
    p2 = records["p2"]
    assert p2.fields["chosen"] == "2x"
    assert p2.metadata["generator"] == "s1"
    assert p2.suggestions["preferred"].value == "tie"
    assert p2.suggestions["preferred"].agent == "judge"
    assert p2.vectors["emb"] == pytest.approx([0.0, 1.0, 0.0])


def test_search_and_filters(dataset: Any) -> None:
    assert _search(dataset, ("metadata.generator", "==", "r1")) == ["p0", "p1"]
    assert _search(dataset, ("metadata.delta", ">=", 1.0)) == ["p0", "p1"]
    assert _search(dataset, ("preferred.suggestion", "==", "tie")) == ["p2"]
    assert _search(dataset, ("preferred.score", ">=", 0.5)) == ["p0", "p1", "p2", "p3"]
    assert _search(dataset, query="France") == ["p1"]
    assert _search(dataset, ("metadata.generator", "==", "s1"), query="prime") == ["p3"]
    assert _search(dataset, ("status", "==", "pending")) == ["p0", "p1", "p2", "p3"]


def test_submitted_response_is_indexed(client: Any, dataset: Any) -> None:
    """POST /records/{id}/responses: a scripted update upstream, read-modify-write here."""
    import argilla as rg

    record = _record(dataset, "p0")
    response = rg.UserResponse(
        [rg.Response("preferred", "chosen", user_id=client.me.id, status="submitted")],
        _record=record,
    )
    client.api.records.create_record_response(record._server_id, response.api_model())

    assert _search(dataset, ("preferred.response", "==", "chosen")) == ["p0"]
    assert _search(dataset, ("response.status", "==", "submitted")) == ["p0"]
    assert _search(dataset, ("status", "==", "completed")) == ["p0"]  # min_submitted=1
    back = _record(dataset, "p0")
    assert back.status == "completed"
    assert [(r.question_name, r.value, r.status.value) for r in back.responses] == [
        ("preferred", "chosen", "submitted")
    ]
    # The suggestion written by the bulk log survived the read-modify-write of the document.
    assert back.suggestions["preferred"].value == "chosen"


def test_response_update_and_delete_are_indexed(client: Any, dataset: Any) -> None:
    """The web UI's calls: bulk upsert, PUT and DELETE of a response (all scripted upstream)."""
    record = _record(dataset, "p1")
    http = client.http_client
    upsert = http.post(
        "/api/v1/me/responses/bulk",
        json={
            "items": [
                {
                    "record_id": str(record._server_id),
                    "status": "draft",
                    "values": {"preferred": {"value": "tie"}},
                }
            ]
        },
    )
    upsert.raise_for_status()
    (item,) = upsert.json()["items"]
    assert item["error"] is None, item
    response_id = item["item"]["id"]
    assert _search(dataset, ("preferred.response", "==", "tie")) == ["p1"]
    assert _search(dataset, ("response.status", "==", "draft")) == ["p1"]

    http.put(
        f"/api/v1/responses/{response_id}",
        json={"status": "submitted", "values": {"preferred": {"value": "rejected"}}},
    ).raise_for_status()
    assert _search(dataset, ("preferred.response", "==", "rejected")) == ["p1"]
    assert _search(dataset, ("preferred.response", "==", "tie")) == []
    assert _search(dataset, ("response.status", "==", "submitted")) == ["p0", "p1"]

    http.delete(f"/api/v1/responses/{response_id}").raise_for_status()
    assert _search(dataset, ("preferred.response", "==", "rejected")) == []
    assert _search(dataset, ("response.status", "==", "submitted")) == ["p0"]
    assert len(_record(dataset, "p1").responses) == 0


def test_deleted_suggestion_is_gone(client: Any, dataset: Any) -> None:
    """DELETE /suggestions/{id}: a scripted update upstream, read-modify-write here."""
    record = _record(dataset, "p3")
    # (GET /records/{id} answers 500 MissingGreenlet in argilla-server 2.8.0 whatever the engine.)
    listing = client.http_client.get(f"/api/v1/records/{record._server_id}/suggestions")
    listing.raise_for_status()
    (suggestion,) = listing.json()["items"]
    client.http_client.delete(f"/api/v1/suggestions/{suggestion['id']}").raise_for_status()

    assert _search(dataset, ("preferred.suggestion", "==", "rejected")) == []
    assert len(_record(dataset, "p3").suggestions) == 0
    # The other records keep theirs, and p3 is still found by its other properties.
    assert _search(dataset, ("preferred.suggestion", "==", "tie")) == ["p2"]
    assert _search(dataset, query="prime") == ["p3"]


def test_similarity_search(dataset: Any) -> None:
    """knn upstream, in-process cosine here: order, least-similar, record-as-query and filters."""
    import argilla as rg

    def scored(value: Any, most_similar: bool = True, **kwargs: Any) -> list[tuple[str, float]]:
        query = rg.Query(similar=rg.Similar("emb", value, most_similar=most_similar), **kwargs)
        return [(record.id, score) for record, score in dataset.records(query=query)]

    def similar(value: Any, most_similar: bool = True, **kwargs: Any) -> list[str]:
        return [rid for rid, _ in scored(value, most_similar, **kwargs)]

    # OpenSearch's cosinesimil scale, (1 + cos) / 2: identical 1.0, orthogonal 0.5.
    assert dict(scored([1.0, 0.0, 0.0])) == pytest.approx(
        {"p0": 1.0, "p1": (1 + 0.9 / (0.81 + 0.01) ** 0.5) / 2, "p2": 0.5, "p3": 0.5}
    )
    assert similar([1.0, 0.0, 0.0])[:2] == ["p0", "p1"]
    assert similar([0.0, 0.0, 1.0])[0] == "p3"
    assert similar([1.0, 0.0, 0.0], most_similar=False)[-1] == "p0"  # least similar first
    p0 = _record(dataset, "p0")
    by_record = similar(p0)
    assert by_record[0] == "p1" and "p0" not in by_record  # the query record is excluded
    filtered = similar([1.0, 0.0, 0.0], filter=rg.Filter(("metadata.generator", "==", "s1")))
    assert sorted(filtered) == ["p2", "p3"]


def test_worker_runs_distribution_job(client: Any, dataset: Any) -> None:
    """Changing min_submitted enqueues an rq job; the worker recomputes record status with it."""
    import argilla as rg

    assert _search(dataset, ("status", "==", "completed")) == ["p0"]
    dataset.settings.distribution = rg.TaskDistribution(min_submitted=2)
    dataset.update()
    try:
        assert eventually(lambda: _search(dataset, ("status", "==", "completed")) == []), (
            "the worker did not recompute record status"
        )
        assert _record(dataset, "p0").status == "pending"
    finally:
        dataset.settings.distribution = rg.TaskDistribution(min_submitted=1)
        dataset.update()
    assert eventually(lambda: _search(dataset, ("status", "==", "completed")) == ["p0"])


# ------------------------------------------------------------------------------ no orphans


def _process_groups() -> dict[int, int]:
    """pid -> process group of every live (non-zombie) process."""
    groups = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if state not in ("Z", "X"):
            groups[int(stat.parent.name)] = int(pgrp)
    return groups


def _members(groups: set[int]) -> set[int]:
    return {pid for pid, group in _process_groups().items() if group in groups}


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_boot_and_stop_leave_no_processes() -> None:
    stack = new_stack()
    with stack:
        groups = set(stack.pids.values())
        work_dir = stack.work_dir
        members = _members(groups)
        # osmem, redis, server and worker, all in the four groups (the rq worker forks a
        # work-horse only while a job runs, so a fifth process may or may not be there).
        assert len(groups) == 4 and len(members) >= 4, members
        assert members <= _descendants(os.getpid())
    assert _members(groups) == set()
    assert not (members & set(_process_groups())), "a stack process outlived stop()"
    assert work_dir is not None and not work_dir.exists()


def _spawn_python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = BOOT_LIMIT_S) -> str:
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"{marker!r} never printed:\n{''.join(seen)}")


@pytest.fixture
def server_venv_present() -> None:
    new_stack()  # fails the test, with the install command, when the venv is missing


@pytest.mark.usefixtures("server_venv_present")
def test_serve_prints_credentials_and_stops_on_ctrl_c() -> None:
    proc = _spawn_python(
        "from prefdelta.review.stack import serve\n"
        "serve(username='reviewer', password='s3cret-pass', api_key='reviewer.apikey')\n"
    )
    try:
        banner = _read_until(proc, "Press Ctrl-C to stop.")
        for expected in ("http://127.0.0.1:", "reviewer", "s3cret-pass", "reviewer.apikey"):
            assert expected in banner
        children = _descendants(proc.pid)
        assert len(children) >= 4, banner  # osmem, redis, server, worker
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Argilla stopped." in out
    assert not (children & set(_process_groups()))


@pytest.mark.usefixtures("server_venv_present")
def test_killed_parent_leaves_no_orphans() -> None:
    """Even SIGKILL of the parent: every child sees its stdin close and takes its group down."""
    proc = _spawn_python(
        "import json, time\n"
        "from prefdelta.review.stack import ArgillaStack\n"
        "stack = ArgillaStack().start()\n"
        "print(json.dumps(stack.pids), flush=True)\n"
        "time.sleep(600)\n"
    )
    try:
        line = _read_until(proc, "{").splitlines()[-1]
        groups = set(json.loads(line).values())
        assert len(groups) == 4 and len(_members(groups)) >= 4
    finally:
        proc.kill()
        proc.wait()
    assert eventually(lambda: not _members(groups), timeout=30), _members(groups)


@pytest.mark.usefixtures("server_venv_present")
def test_kept_work_dir_survives_a_restart(tmp_path: Path) -> None:
    """SQLite persists, osmem does not: the second boot reindexes, with the saved credentials."""
    import argilla as rg

    work_dir = tmp_path / "argilla"
    with ArgillaStack(work_dir=work_dir) as first:
        credentials = (first.username, first.password, first.api_key)
        client = rg.Argilla(api_url=first.api_url, api_key=first.api_key)
        settings = rg.Settings(
            fields=[rg.TextField(name="prompt")],
            questions=[rg.LabelQuestion(name="ok", labels=["yes", "no"])],
            metadata=[rg.TermsMetadataProperty(name="generator")],
        )
        workspace = rg.Workspace(name="kept", client=client).create()
        ds = rg.Dataset(name="kept", workspace=workspace, settings=settings, client=client).create()
        ds.records.log(
            [rg.Record(id="k0", fields={"prompt": "kept?"}, metadata={"generator": "g"})]
        )
        # A draft (never published) has no index; the restart's reindex gives it one anyway.
        http = client.http_client
        draft = http.post(
            "/api/v1/datasets", json={"name": "draft", "workspace_id": str(workspace.id)}
        )
        draft_id = draft.raise_for_status().json()["id"]
        http.post(
            f"/api/v1/datasets/{draft_id}/fields",
            json={"name": "prompt", "title": "prompt", "settings": {"type": "text"}},
        ).raise_for_status()
        options = [{"value": "yes", "text": "yes"}, {"value": "no", "text": "no"}]
        http.post(
            f"/api/v1/datasets/{draft_id}/questions",
            json={
                "name": "ok",
                "title": "ok",
                "required": True,
                "settings": {"type": "label_selection", "options": options},
            },
        ).raise_for_status()
    assert (work_dir / "argilla.db").exists()
    assert json.loads((work_dir / "credentials.json").read_text())["api_key"] == credentials[2]

    with ArgillaStack(work_dir=work_dir) as second:
        assert (second.username, second.password, second.api_key) == credentials
        client = rg.Argilla(api_url=second.api_url, api_key=second.api_key)
        ds = client.datasets(name="kept", workspace="kept")
        assert _search(ds, ("metadata.generator", "==", "g")) == ["k0"]
        assert _search(ds, query="kept") == ["k0"]
        publish = client.http_client.put(f"/api/v1/datasets/{draft_id}/publish")
        assert publish.status_code == 200, publish.text
        published = client.datasets(name="draft", workspace="kept")
        published.records.log([rg.Record(id="d0", fields={"prompt": "published"})])
        assert _search(published, query="published") == ["d0"]
