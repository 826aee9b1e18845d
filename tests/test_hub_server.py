"""The loopback Hub, driven by the real huggingface_hub and datasets clients.

These tests are the contract the publish/review/train code relies on: if a client
upgrade changes what it sends, they fail here first, not in an end-to-end run.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import datasets
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    DatasetCard,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from support.hub_server import FaultInjector, FaultPlan, HubServer

# huggingface_hub 1.33 PUTs LFS objects with httpx's deprecated `data=<file>`; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "prefdelta-test/openr1-math-delta"
CARD = """---
license: apache-2.0
configs:
- config_name: pairs
  default: true
  data_files:
  - split: train
    path: data/pairs/train-*
- config_name: traces
  data_files:
  - split: train
    path: data/traces/train-*
---
# openr1-math-delta (test)
"""


# ----------------------------------------------------------------------------- helpers


def _pairs(n: int, salt: str = "") -> list[dict[str, Any]]:
    """Rows shaped like the published `pairs` config (conversational, flat delta columns)."""
    return [
        {
            "prompt_id": f"{salt}{i:04d}",
            "prompt": f"What is {i} + {i}?",
            "chosen": [
                {"role": "user", "content": f"What is {i} + {i}?"},
                {"role": "assistant", "content": f"Step 1: add. Answer: {2 * i}"},
            ],
            "rejected": [
                {"role": "user", "content": f"What is {i} + {i}?"},
                {"role": "assistant", "content": "Answer: 7"},
            ],
            "delta_step_coherence": float(i % 5) - 1.0,
            "delta": float(i % 3),
        }
        for i in range(n)
    ]


def _write_folder(root: Path, pairs: list[dict[str, Any]], card: str = CARD) -> Path:
    """The published layout: two parquet configs, a card, the recipe and a plot."""
    for config, rows in (("pairs", pairs), ("traces", [{"trace": "t", "judge_status": "ok"}])):
        (root / "data" / config).mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pylist(rows), root / "data" / config / "train-00000-of-00001.parquet"
        )
    (root / "plots").mkdir(exist_ok=True)
    (root / "plots" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (root / "recipe.yaml").write_text("name: openr1-math-delta\nrecipe_hash: abc123\n")
    (root / "README.md").write_text(card)
    return root


def _publish(api: HfApi, folder: Path, message: str = "publish") -> str:
    api.create_repo(REPO, repo_type="dataset", exist_ok=True)
    return api.upload_folder(
        repo_id=REPO, repo_type="dataset", folder_path=folder, commit_message=message
    ).oid


def _load(**kwargs: Any) -> list[dict[str, Any]]:
    return datasets.load_dataset(REPO, "pairs", split="train", **kwargs).to_list()


def _head(api: HfApi) -> str:
    return api.dataset_info(REPO).sha


@pytest.fixture
def api(hub: HubServer) -> HfApi:
    return HfApi()


# ----------------------------------------------------------------------------- round trips


def test_create_repo_conflict_and_exist_ok(api: HfApi, hub: HubServer) -> None:
    url = api.create_repo(REPO, repo_type="dataset", private=True)
    assert url.repo_id == REPO and url.repo_type == "dataset"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO, repo_type="dataset")
    assert err.value.response.status_code == 409
    assert api.create_repo(REPO, repo_type="dataset", exist_ok=True).repo_id == REPO
    assert api.whoami()["name"] == "tester"
    assert api.dataset_info(REPO).private is True
    assert api.list_repo_files(REPO, repo_type="dataset") == [".gitattributes"]
    with pytest.raises(RepositoryNotFoundError):  # private: invisible without a token
        HfApi(token=False).dataset_info(REPO)
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("prefdelta-test/missing")


def test_upload_folder_round_trips_through_load_dataset(
    api: HfApi, hub: HubServer, tmp_path: Path
) -> None:
    rows = _pairs(12)
    sha = _publish(api, _write_folder(tmp_path / "v1", rows))

    assert api.list_repo_files(REPO, repo_type="dataset") == [
        ".gitattributes",
        "README.md",
        "data/pairs/train-00000-of-00001.parquet",
        "data/traces/train-00000-of-00001.parquet",
        "plots/x.png",
        "recipe.yaml",
    ]
    tree = {f.path: f for f in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)}
    assert tree["data/pairs/train-00000-of-00001.parquet"].lfs is not None  # parquet via LFS
    assert tree["plots/x.png"].lfs is not None
    assert tree["README.md"].lfs is None and tree["recipe.yaml"].lfs is None
    commits = api.list_repo_commits(REPO, repo_type="dataset")
    assert [c.title for c in commits] == ["publish", "initial commit"]  # one commit per publish
    assert commits[0].commit_id == sha == _head(api)

    assert _load() == rows
    filtered = _load(filters=[("delta_step_coherence", ">=", 2)])
    assert filtered == [r for r in rows if r["delta_step_coherence"] >= 2] and filtered
    assert datasets.get_dataset_config_names(REPO) == ["pairs", "traces"]
    card = DatasetCard.load(REPO)
    assert card.data.license == "apache-2.0"
    assert [c["config_name"] for c in card.data.configs] == ["pairs", "traces"]
    recipe = hf_hub_download(REPO, "recipe.yaml", repo_type="dataset")
    assert Path(recipe).read_text().startswith("name: openr1-math-delta")


def test_tag_pins_data_after_main_moves_on(api: HfApi, hub: HubServer, tmp_path: Path) -> None:
    v1, v2 = _pairs(6, "a"), _pairs(9, "b")
    sha1 = _publish(api, _write_folder(tmp_path / "v1", v1), "v1")
    api.create_tag(REPO, tag="v1", repo_type="dataset", tag_message="first release")
    _publish(api, _write_folder(tmp_path / "v2", v2), "v2")

    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", sha1)]
    assert [b.name for b in refs.branches] == ["main"]
    assert _load() == v2
    assert _load(revision="v1") == v1
    assert _load(revision=sha1) == v1
    assert api.dataset_info(REPO, revision="v1").sha == sha1
    with pytest.raises(HfHubHTTPError) as err:  # tags never move
        api.create_tag(REPO, tag="v1", repo_type="dataset")
    assert err.value.response.status_code == 409
    api.create_tag(REPO, tag="v1", repo_type="dataset", exist_ok=True)  # ...and stay put
    assert api.list_repo_refs(REPO, repo_type="dataset").tags[0].target_commit == sha1
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(REPO, revision="v9")


def test_dataset_push_to_hub(api: HfApi, hub: HubServer) -> None:
    rows = _pairs(7)
    datasets.Dataset.from_list(rows).push_to_hub(REPO, config_name="pairs", split="train")
    assert _load() == rows
    files = {f.path: f for f in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)}
    shards = [p for p in files if p.endswith(".parquet")]
    assert shards and all(files[p].lfs is not None for p in shards)
    assert [c["config_name"] for c in DatasetCard.load(REPO).data.configs] == ["pairs"]


def test_snapshot_download_and_resolve_headers(api: HfApi, hub: HubServer, tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "v1", _pairs(4))
    sha = _publish(api, folder)
    local = Path(snapshot_download(REPO, repo_type="dataset", local_dir=tmp_path / "snap"))
    for path in (
        "README.md",
        "recipe.yaml",
        "plots/x.png",
        "data/pairs/train-00000-of-00001.parquet",
    ):
        assert (local / path).read_bytes() == (folder / path).read_bytes()

    parquet = (folder / "data/pairs/train-00000-of-00001.parquet").read_bytes()
    url = f"{hub.url}/datasets/{REPO}/resolve/main/data/pairs/train-00000-of-00001.parquet"
    head = httpx.head(url)
    assert head.headers["X-Repo-Commit"] == sha
    assert head.headers["X-Linked-Size"] == str(len(parquet)) == head.headers["Content-Length"]
    assert head.headers["X-Linked-Etag"] == head.headers["ETag"]  # sha256 of the LFS object
    part = httpx.get(url, headers={"Range": "bytes=4-11"})
    assert part.status_code == 206 and part.content == parquet[4:12]
    assert part.headers["Content-Range"] == f"bytes 4-11/{len(parquet)}"
    assert httpx.get(url, headers={"Range": "bytes=-4"}).content == parquet[-4:]
    assert httpx.get(url, headers={"Range": f"bytes={len(parquet)}-"}).status_code == 416
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.txt", repo_type="dataset")

    hub.app.tree_page_size = 2  # the client must follow the Link header
    try:
        assert len(api.list_repo_files(REPO, repo_type="dataset")) == 6
    finally:
        hub.app.tree_page_size = 1000


def test_republish_replaces_the_file_set_in_one_commit(
    api: HfApi, hub: HubServer, tmp_path: Path
) -> None:
    _publish(api, _write_folder(tmp_path / "v1", _pairs(3)))
    v2 = _write_folder(tmp_path / "v2", _pairs(4, "b"))
    (v2 / "plots" / "x.png").unlink()
    api.upload_folder(
        repo_id=REPO, repo_type="dataset", folder_path=v2, delete_patterns="*", commit_message="v2"
    )
    files = api.list_repo_files(REPO, repo_type="dataset")
    assert "plots/x.png" not in files and ".gitattributes" in files
    assert [c.title for c in api.list_repo_commits(REPO, repo_type="dataset")][:2] == [
        "v2",
        "publish",
    ]
    assert _load() == _pairs(4, "b")


def test_model_repo_round_trip(api: HfApi, hub: HubServer, tmp_path: Path) -> None:
    repo = "prefdelta-test/tiny-model"
    api.create_repo(repo)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    api.upload_folder(repo_id=repo, folder_path=tmp_path)
    local = Path(snapshot_download(repo))
    assert (local / "model.safetensors").read_bytes() == bytes(range(256)) * 8
    assert api.model_info(repo, files_metadata=True).siblings[-1].lfs is not None
    assert Path(hf_hub_download(repo, "config.json")).read_text() == '{"model_type": "llama"}'


# ----------------------------------------------------------------------------- failures


def test_fault_decisions_are_seeded_and_deterministic() -> None:
    def run(seed: int) -> list[bool]:
        faults = FaultInjector()
        faults.configure(FaultPlan(rate=0.3, seed=seed, max_consecutive=None))
        return [faults.decide("GET", f"/x/{i}") is not None for i in range(2000)]

    first = run(7)
    assert first == run(7) and first != run(8)
    assert 0.27 < sum(first) / len(first) < 0.33


def test_upload_and_download_survive_injected_faults(
    api: HfApi, hub: HubServer, tmp_path: Path
) -> None:
    rows = _pairs(10)
    folder = _write_folder(tmp_path / "v1", rows)
    api.create_repo(REPO, repo_type="dataset")
    hub.clear_stats()
    # huggingface_hub retries preupload and every LFS call (http_backoff), not the commit.
    # Every such request fails once (5xx and cut connections in turn), then gets through.
    hub.set_faults(rate=1.0, max_consecutive=1, paths=[r"/preupload/", r"\.git/info/lfs/"])
    api.upload_folder(repo_id=REPO, repo_type="dataset", folder_path=folder)
    log = hub.stats()["log"]
    faulted = [x for x in log if x["fault"]]
    assert len(faulted) / len(log) >= 0.3, log
    assert {x["fault"] for x in faulted} == {"status", "drop"}

    # Downloads resume after a cut connection with a Range request (a 5xx on a download
    # GET is not retried by huggingface_hub, so only cuts are injected there).
    hub.set_faults(
        rate=1.0, max_consecutive=1, paths=[r"/resolve/"], methods=["GET"], kinds=["drop"]
    )
    local = Path(snapshot_download(REPO, repo_type="dataset", local_dir=tmp_path / "snap"))
    for path in ("README.md", "plots/x.png", "data/pairs/train-00000-of-00001.parquet"):
        assert (local / path).read_bytes() == (folder / path).read_bytes()
    assert any(x["fault"] == "drop" for x in hub.stats()["log"] if "/resolve/" in x["path"])
    hub.clear_faults()
    assert _load() == rows


def test_aborted_commit_leaves_previous_snapshot(
    api: HfApi, hub: HubServer, tmp_path: Path
) -> None:
    v1 = _pairs(5, "a")
    before = _publish(api, _write_folder(tmp_path / "v1", v1), "v1")
    files_before = api.list_repo_files(REPO, repo_type="dataset")
    v2 = _write_folder(tmp_path / "v2", _pairs(8, "b"))
    (v2 / "extra.md").write_text("new file\n")

    hub.set_faults(abort_commit_after_ops=2)  # dies with some operations already staged
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_folder(repo_id=REPO, repo_type="dataset", folder_path=v2, commit_message="v2")
    assert err.value.response.status_code == 500 and hub.stats()["commit_aborts"] == 1
    hub.clear_faults()

    assert _head(api) == before
    assert api.list_repo_files(REPO, repo_type="dataset") == files_before
    assert api.list_repo_commits(REPO, repo_type="dataset")[0].title == "v1"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "extra.md", repo_type="dataset", revision="main")
    assert _load() == v1

    # A commit naming an LFS object that was never uploaded is refused as a whole.
    ndjson = [
        {"key": "header", "value": {"summary": "bad", "description": ""}},
        {
            "key": "file",
            "value": {
                "path": "ok.md",
                "content": base64.b64encode(b"hi").decode(),
                "encoding": "base64",
            },
        },
        {
            "key": "lfsFile",
            "value": {"path": "ghost.parquet", "algo": "sha256", "oid": "0" * 64, "size": 1},
        },
    ]
    resp = httpx.post(
        f"{hub.url}/api/datasets/{REPO}/commit/main",
        content="\n".join(json.dumps(x) for x in ndjson),
        headers={"Authorization": "Bearer t", "Content-Type": "application/x-ndjson"},
    )
    assert resp.status_code == 422
    assert _head(api) == before and "ok.md" not in api.list_repo_files(REPO, repo_type="dataset")


def test_lost_commit_response_is_detectable_with_parent_commit(api: HfApi, hub: HubServer) -> None:
    """The client never retries a commit: a publisher must, and the Hub's answers make it safe."""
    api.create_repo(REPO, repo_type="dataset")
    parent = _head(api)
    hub.set_faults(rate=1.0, paths=[r"/commit/main$"], phase="after", kinds=["status"], limit=1)
    with pytest.raises(HfHubHTTPError):  # the commit landed, its response did not
        api.create_commit(
            REPO,
            [CommitOperationAdd("recipe.yaml", b"name: x\n")],
            commit_message="m",
            repo_type="dataset",
            parent_commit=parent,
        )
    landed = _head(api)
    assert landed != parent
    # Retrying the same content is a no-op: preupload reports identical oids, no commit is sent.
    retry = api.create_commit(
        REPO,
        [CommitOperationAdd("recipe.yaml", b"name: x\n")],
        commit_message="m",
        repo_type="dataset",
        parent_commit=parent,
    )
    assert retry.oid == landed == _head(api)
    # Different content against the stale parent is refused (412), never silently stacked.
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(
            REPO,
            [CommitOperationAdd("recipe.yaml", b"name: y\n")],
            commit_message="m",
            repo_type="dataset",
            parent_commit=parent,
        )
    assert err.value.response.status_code == 412
    assert len(api.list_repo_commits(REPO, repo_type="dataset")) == 2


def test_admin_endpoint_controls_faults(hub: HubServer) -> None:
    plan = {"rate": 1.0, "paths": ["/api/whoami-v2"], "kinds": ["status"], "statuses": [502]}
    assert httpx.post(f"{hub.url}/_admin/faults", json=plan).status_code == 200
    auth = {"Authorization": "Bearer t"}
    assert httpx.get(f"{hub.url}/api/whoami-v2", headers=auth).status_code == 502
    assert httpx.delete(f"{hub.url}/_admin/faults").status_code == 200
    assert httpx.get(f"{hub.url}/api/whoami-v2", headers=auth).status_code == 200
    assert httpx.post(f"{hub.url}/_admin/faults", json={"bogus": 1}).status_code == 400
    stats = httpx.get(f"{hub.url}/_admin/stats").json()
    assert [(x["status"], x["fault"]) for x in stats["log"]] == [(502, "status"), (200, "")]
