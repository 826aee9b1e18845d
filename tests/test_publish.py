"""Publishing a build: the layout, the card, the Hub commit (atomic, retried, idempotent).

Everything runs against real clients: ``datasets`` and ``huggingface_hub`` read what was
published, from a folder or from the loopback Hub (tests/support/hub_server.py) with injected
faults.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard, HfApi
from typer.testing import CliRunner

from prefdelta.push import BuildFolderError, PublishError, publish_build
from support.build_fixtures import build_pairs, make_build
from support.hub_server import HubServer

# huggingface_hub 1.33 PUTs LFS objects with httpx's deprecated `data=<file>`; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "tester/synthetic-delta"
# The loopback Hub 404s unauthenticated LFS PUTs to private repos (the real Hub hands out
# presigned URLs), so Hub tests publish public repos; privacy is not what they test.
PUBLIC = {"private": False}


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return make_build(tmp_path / "build", n_prompts=30)


def _rows(ds: datasets.Dataset) -> list[dict[str, Any]]:
    return sorted(ds.to_list(), key=lambda r: r["pair_id"])


def _expected(build: Path) -> list[dict[str, Any]]:
    return sorted(build_pairs(build), key=lambda r: r["pair_id"])


def _commits(repo: str = REPO) -> list[str]:
    return [c.commit_id for c in HfApi().list_repo_commits(repo, repo_type="dataset")]


def _validate_on_hub(card: DatasetCard, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub's own card validation, sent to the loopback Hub instead of huggingface.co."""
    import huggingface_hub.repocard as repocard

    real = repocard.get_session
    endpoint = os.environ["HF_ENDPOINT"]

    class Session:
        def post(self, url: str, **kwargs: Any) -> Any:
            return real().post(url.replace("https://huggingface.co", endpoint), **kwargs)

    monkeypatch.setattr(repocard, "get_session", lambda: Session())
    card.validate()


def _check_card_metadata(card: DatasetCard, splits: list[str]) -> None:
    from datasets.utils.metadata import MetadataConfigs

    size_categories = json.loads(
        (Path(datasets.__file__).parent / "utils/resources/size_categories.json").read_text()
    )
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0"
    assert data["task_categories"] == ["text-generation"]
    assert set(data["size_categories"]) <= set(size_categories)
    assert "prefdelta" in data["tags"]
    configs = MetadataConfigs.from_dataset_card_data(card.data)  # datasets' own validation
    assert list(configs) == ["pairs", "traces"]
    assert configs.get_default_config_name() == "pairs"
    assert [f["split"] for f in configs["pairs"]["data_files"]] == splits


# ----------------------------------------------------------------------------- folder


def test_folder_round_trip(build: Path, tmp_path: Path) -> None:
    out = tmp_path / "published"
    result = publish_build(build, out)
    assert result.kind == "folder" and result.changed
    assert result.splits == {"train": len(build_pairs(build))}

    ds = datasets.load_dataset(str(out), "pairs", split="train")
    assert _rows(ds) == _expected(build)
    assert datasets.get_dataset_config_names(str(out)) == ["pairs", "traces"]
    traces = datasets.load_dataset(str(out), "traces", split="train")
    assert len(traces) == pq.read_metadata(build / "traces.parquet").num_rows
    assert (out / "recipe.yaml").read_bytes() == (build / "recipe.yaml").read_bytes()

    card = DatasetCard.load(out / "README.md")
    _check_card_metadata(card, ["train"])
    plots = sorted(p.relative_to(out).as_posix() for p in (out / "plots").glob("*.png"))
    assert "plots/delta_step_coherence.png" in plots
    assert "plots/pair_strong__vs__weak.png" in plots
    for plot in plots:
        assert f"]({plot})" in card.text  # embedded in the card
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'filters=[("delta_step_coherence", ">=", 2)]' in card.text
    summary = json.loads((build / "summary.json").read_text())
    for status, n in summary["judge_status"].items():
        assert f"| judge status `{status}` | {n} |" in card.text
    assert "strong vs weak" in card.text and "generator_delta" in card.text

    again = publish_build(build, out)
    assert not again.changed
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".published")]
    assert leftovers == []  # staging folders are always cleaned up


def test_the_card_lists_every_column_and_says_when_there_is_nothing_to_plot(
    tmp_path: Path,
) -> None:
    scored = publish_build(make_build(tmp_path / "b1", n_prompts=8), tmp_path / "p1", test_size=0)
    table = pq.read_table(next((Path(scored.target) / "data" / "pairs").glob("*.parquet")))
    card = (Path(scored.target) / "README.md").read_text()
    columns_section = card[card.index("## Columns of `pairs`") :]
    for column in table.column_names:  # every shipped column is explained
        assert f"`{column}`" in columns_section, column
    assert "corresponds to no data" in card  # what an empty filter does, said up front

    # a build whose judge scored nothing: a sentence, not six empty histograms
    unscored = make_build(tmp_path / "b2", n_prompts=6, failure_rate=1.0, unjudged="keep")
    result = publish_build(unscored, tmp_path / "p2", test_size=0)
    card = (Path(result.target) / "README.md").read_text()
    assert "No pair has a sample-level delta" in card
    assert "No generator pair has a pair with an aggregate delta to plot." in card
    assert not list((Path(result.target) / "plots").glob("*.png")) and "](plots/" not in card


def test_a_weighted_delta_card_lists_its_weights(tmp_path: Path) -> None:
    build = make_build(tmp_path / "b", n_prompts=6)
    recipe = build / "recipe.yaml"
    text = recipe.read_text().replace(
        "delta: {aggregate: mean}", "delta: {weights: {step_coherence: 2, factuality: 0.5}}"
    )
    recipe.write_text(text)
    summary = json.loads((build / "summary.json").read_text())
    summary["files"]["recipe.yaml"] = hashlib.sha256(recipe.read_bytes()).hexdigest()
    (build / "summary.json").write_text(json.dumps(summary))
    card = (
        Path(publish_build(build, tmp_path / "p", test_size=0).target) / "README.md"
    ).read_text()
    assert (
        "(weights: `factuality` 0.5, `step_coherence` 2; a dimension not listed weighs 0)" in card
    )


def test_the_card_shows_the_tokens_each_model_took(tmp_path: Path) -> None:
    build = make_build(tmp_path / "b", n_prompts=4)
    summary = json.loads((build / "summary.json").read_text())
    usage = {"calls": 4, "input": 1200, "output": 800, "unknown_input": 0, "unknown_output": 0}
    summary["tokens"] = {
        "generators": {g: dict(usage) for g in ("strong", "weak", "weaker")},
        "judge": {**usage, "calls": 13, "unknown_output": 2},
    }
    (build / "summary.json").write_text(json.dumps(summary))
    card = (
        Path(publish_build(build, tmp_path / "p", test_size=0).target) / "README.md"
    ).read_text()
    assert "## Tokens" in card
    assert "| `strong` | `org/strong-reasoner` | 4 | 1200 | 800 |" in card
    assert "| `judge` | `org/judge` | 13 | 1200 | 800 (+2 unreported) |" in card


def test_pairs_are_stored_highest_sort_column_first(build: Path, tmp_path: Path) -> None:
    out = tmp_path / "published"
    publish_build(build, out, sort_by="delta_step_coherence")
    table = pq.read_table(out / "data/pairs/train-00000-of-00001.parquet")
    values = table.column("delta_step_coherence").to_pylist()
    scored = [v for v in values if v is not None]
    assert values == scored + [None] * (len(values) - len(scored))  # no delta: last
    assert scored == sorted(scored, reverse=True)
    ids = table.column("pair_id").to_pylist()
    for a, b in zip(range(len(ids)), range(1, len(ids)), strict=False):
        if values[a] == values[b]:
            assert ids[a] < ids[b]  # ties in pair-id order: the same bytes on every run
    assert _rows(datasets.load_dataset(str(out), "pairs", split="train")) == _expected(build)
    assert "stored highest `delta_step_coherence` first" in (out / "README.md").read_text()
    publish_build(build, tmp_path / "default")  # the recipe says nothing: by `delta`
    assert "stored highest `delta` first" in (tmp_path / "default/README.md").read_text()

    with pytest.raises(PublishError, match=r"no column 'delta_brevity'; delta columns: .*delta_"):
        publish_build(build, tmp_path / "bad", sort_by="delta_brevity")
    assert not (tmp_path / "bad").exists()


def test_sorted_row_groups_let_a_delta_filter_skip_the_rest(tmp_path: Path) -> None:
    """What sorting buys: parquet statistics rule out every row group below the threshold."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.dataset as pads

    from prefdelta.push.layout import sort_pairs, write_table

    rng = np.random.default_rng(0)
    n = 40_000
    table = pa.table(
        {
            "pair_id": [f"pair-{i:06d}" for i in range(n)],
            "delta": rng.integers(-4, 5, n).astype(float),
            "trace": ["step " * 400] * n,  # 2 kB a row, like a short trace: ~10 row groups
        }
    )
    wanted = pads.field("delta") >= 3

    def row_groups_read(t: pa.Table, name: str) -> tuple[int, int]:
        path = tmp_path / f"{name}.parquet"
        write_table(t, path)
        fragment = next(iter(pads.dataset(path).get_fragments()))
        return fragment.subset(wanted).num_row_groups, fragment.num_row_groups

    read, total = row_groups_read(sort_pairs(table, "delta"), "sorted")
    assert total >= 8
    assert read <= total * 0.3  # ~2/9 of the rows qualify, and only their groups are read
    assert row_groups_read(table, "unsorted") == (total, total)


def test_folder_test_split_is_by_prompt_and_deterministic(build: Path, tmp_path: Path) -> None:
    a = publish_build(build, tmp_path / "a", test_size=0.25)
    b = publish_build(build, tmp_path / "b", test_size=0.25)
    assert set(a.splits) == {"train", "test"} and a.splits == b.splits
    train = datasets.load_dataset(str(tmp_path / "a"), "pairs", split="train")
    test = datasets.load_dataset(str(tmp_path / "a"), "pairs", split="test")
    assert not set(train["prompt_id"]) & set(test["prompt_id"])
    assert sorted([*train["pair_id"], *test["pair_id"]]) == sorted(
        r["pair_id"] for r in build_pairs(build)
    )
    for name in ("train", "test"):
        path = f"data/pairs/{name}-00000-of-00001.parquet"
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()
    _check_card_metadata(DatasetCard.load(tmp_path / "a" / "README.md"), ["train", "test"])


def test_folder_replace_is_whole_and_refuses_foreign_folders(build: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    publish_build(build, out, test_size=0.25)
    publish_build(build, out)  # a different layout replaces the old one entirely
    assert not (out / "data/pairs/test-00000-of-00001.parquet").exists()
    owned = json.loads((out / ".prefdelta-manifest.json").read_text())["files"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        [*owned, ".prefdelta-manifest.json"]
    )

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(PublishError, match=r"refusing to publish into .*notes\.txt"):
        publish_build(build, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_a_project_folder_keeps_every_file_prefdelta_did_not_write(
    build: Path, tmp_path: Path
) -> None:
    """`--to "$PWD"` from a project: refused; with --overwrite, only its own files written."""
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('hi')\n")
    (project / "notes.txt").write_text("mine")
    (project / "prompts.jsonl").write_text("{}\n")
    (project / "empty").mkdir()
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    with pytest.raises(PublishError, match=r"and no \.prefdelta-manifest\.json") as err:
        publish_build(build, project)
    assert "--overwrite" in str(err.value) and "\n" not in str(err.value)
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == before

    publish_build(build, project, overwrite=True)
    assert {p: p.read_bytes() for p in before} == before and (project / "empty").is_dir()
    assert (project / "README.md").is_file() and (project / "data").is_dir()
    pairs = datasets.load_dataset(str(project), "pairs", split="train")
    assert pairs.num_rows == len(build_pairs(build))


def test_republishing_keeps_a_users_files_and_removes_only_its_own(
    build: Path, tmp_path: Path
) -> None:
    out = tmp_path / "published"
    publish_build(build, out, test_size=0.25)
    (out / "MY_NOTES.md").write_text("notes")
    (out / "analysis").mkdir()
    (out / "analysis" / "plot.ipynb").write_text("{}")
    publish_build(build, out)  # no test split now: its file goes, the user's stay
    assert not publish_build(build, out).changed  # the same build again: nothing to do
    assert (out / "MY_NOTES.md").read_text() == "notes"
    assert (out / "analysis" / "plot.ipynb").read_text() == "{}"
    assert not (out / "data/pairs/test-00000-of-00001.parquet").exists()
    assert (out / "data/pairs/train-00000-of-00001.parquet").is_file()
    # a user's file where a publish writes is not overwritten unless asked
    (out / "plots" / "delta.png").unlink()
    (out / "plots" / "delta.png").write_text("my own plot")
    manifest = json.loads((out / ".prefdelta-manifest.json").read_text())
    manifest["files"].remove("plots/delta.png")
    (out / ".prefdelta-manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PublishError, match=r"plots/delta\.png\) where a publish writes"):
        publish_build(build, out, test_size=0.25)
    assert (out / "plots" / "delta.png").read_text() == "my own plot"
    publish_build(build, out, test_size=0.25, overwrite=True)
    assert (out / "plots" / "delta.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "MY_NOTES.md").read_text() == "notes"


def test_a_publish_never_swallows_its_own_build(build: Path, tmp_path: Path) -> None:
    """`publish: {folder: ..}` at the folder that holds the build (and its store)."""
    with pytest.raises(PublishError, match="which holds it"):
        publish_build(build, build.parent, overwrite=True)
    with pytest.raises(PublishError, match="which holds it"):
        publish_build(build, build)
    assert (build / "summary.json").is_file()


def _add_reviews(target: str | Path, build: Path, n: int = 3) -> list[str]:
    """Reviews of the first ``n`` pairs, as ``prefdelta review pull`` publishes them."""
    import pyarrow as pa

    from prefdelta.push.reviews import publish_reviews

    ids = sorted(r["pair_id"] for r in build_pairs(build))[:n]
    table = pa.table({"pair_id": ids, "annotator": ["alice"] * n, "overall": ["chosen"] * n})
    publish_reviews(target, table, "## Human review\n\nagreement: by hand\n")
    return ids


def _reviewed(target: str | Path) -> list[str]:
    return sorted(datasets.load_dataset(str(target), "reviews", split="train")["pair_id"])


def test_republishing_keeps_reviews_of_pairs_still_published(build: Path, tmp_path: Path) -> None:
    out = tmp_path / "published"
    publish_build(build, out)
    ids = _add_reviews(out, build)

    again = publish_build(build, out, sort_by="delta_step_coherence")  # a new layout
    assert again.changed
    assert _reviewed(out) == ids
    card = (out / "README.md").read_text()
    assert "agreement: by hand" in card and "stored highest `delta_step_coherence`" in card
    assert datasets.get_dataset_config_names(str(out)) == ["pairs", "traces", "reviews"]
    assert not publish_build(build, out, sort_by="delta_step_coherence").changed

    other = make_build(tmp_path / "other", seed=7, n_prompts=5)  # none of the reviewed pairs
    publish_build(other, out)
    assert not (out / "data/reviews").exists()
    assert "agreement: by hand" not in (out / "README.md").read_text()


def test_hub_republish_keeps_reviews(build: Path, hub: HubServer) -> None:
    publish_build(build, REPO, **PUBLIC)
    ids = _add_reviews(REPO, build)
    manifest = HfApi().hf_hub_download(REPO, ".prefdelta-manifest.json", repo_type="dataset")
    listed = json.loads(Path(manifest).read_text())["files"]
    assert "data/reviews/train-00000-of-00001.parquet" in listed  # prefdelta's too, now
    before = len(_commits())
    publish_build(build, REPO, sort_by="delta_factuality", **PUBLIC)
    assert len(_commits()) == before + 1
    assert _reviewed(REPO) == ids
    card = DatasetCard.load(REPO, repo_type="dataset").text
    assert "agreement: by hand" in card and "stored highest `delta_factuality`" in card


def test_modified_or_incomplete_build_is_refused(build: Path, tmp_path: Path) -> None:
    table = pq.read_table(build / "pairs.parquet")
    pq.write_table(table.slice(1), build / "pairs.parquet")  # someone dropped a row by hand
    with pytest.raises(BuildFolderError, match=r"pairs\.parquet was modified after the build"):
        publish_build(build, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    unfinished = make_build(tmp_path / "unfinished")
    (unfinished / "summary.json").unlink()
    with pytest.raises(BuildFolderError, match="not a finished build"):
        publish_build(unfinished, tmp_path / "out")

    missing = make_build(tmp_path / "missing")
    (missing / "traces.parquet").unlink()
    with pytest.raises(BuildFolderError, match=r"incomplete: missing traces\.parquet"):
        publish_build(missing, tmp_path / "out")


def test_resolved_secret_is_never_published(
    build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_REASONER_API_KEY", "sk-very-secret-value")
    recipe = (build / "recipe.yaml").read_text()
    assert "${TEST_REASONER_API_KEY}" in recipe  # the reference, as written
    publish_build(build, tmp_path / "ok")
    assert "sk-very-secret-value" not in (tmp_path / "ok" / "recipe.yaml").read_text()

    # a recipe with the value pasted in (and a summary matching it) is refused
    leaked = recipe.replace("description: the stronger", "description: sk-very-secret-value")
    (build / "recipe.yaml").write_text(leaked)
    summary = json.loads((build / "summary.json").read_text())
    import hashlib

    summary["files"]["recipe.yaml"] = hashlib.sha256(leaked.encode()).hexdigest()
    (build / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(PublishError, match=r"value of \$\{TEST_REASONER_API_KEY\}"):
        publish_build(build, tmp_path / "leak")
    assert not (tmp_path / "leak").exists()


def test_cli_publish_to_folder(build: Path, tmp_path: Path) -> None:
    from prefdelta.cli import app

    target = tmp_path / "cli-out"
    runner = CliRunner()
    result = runner.invoke(app, ["publish", str(build), "--to", str(target), "--test-size", "0.2"])
    assert result.exit_code == 0, result.output
    assert "published" in result.output
    assert (target / "data/pairs/test-00000-of-00001.parquet").is_file()
    # --test-size 0 turns the split off, whatever the recipe or the last publish said
    result = runner.invoke(app, ["publish", str(build), "--to", str(target), "--test-size", "0"])
    assert result.exit_code == 0, result.output
    assert not (target / "data/pairs/test-00000-of-00001.parquet").exists()
    assert (target / "data/pairs/train-00000-of-00001.parquet").is_file()

    bad = runner.invoke(app, ["publish", str(tmp_path / "nope"), "--to", str(target)])
    assert bad.exit_code == 1
    assert "no such build folder" in bad.output and "Traceback" not in bad.output

    project = tmp_path / "project"
    project.mkdir()
    (project / "main.py").write_text("code")
    refused = runner.invoke(app, ["publish", str(build), "--to", str(project)])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "refusing to publish into" in refused.output and "main.py" in refused.output
    assert [p.name for p in project.iterdir()] == ["main.py"]
    forced = runner.invoke(app, ["publish", str(build), "--to", str(project), "--overwrite"])
    assert forced.exit_code == 0, forced.output
    assert (project / "main.py").read_text() == "code" and (project / "README.md").is_file()


def test_cli_publish_defaults_to_recipe_repo(build: Path, hub: HubServer) -> None:
    from prefdelta.cli import app

    assert "repo_id: tester/synthetic" in (build / "recipe.yaml").read_text()
    result = CliRunner().invoke(app, ["publish", str(build), "--public"])
    assert result.exit_code == 0, result.output
    assert "tester/synthetic@" in result.output and "tag recipe-" in result.output
    assert datasets.get_dataset_config_names("tester/synthetic") == ["pairs", "traces"]


# ----------------------------------------------------------------------------- Hub


def test_hub_round_trip(build: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    result = publish_build(build, REPO, **PUBLIC)
    assert result.kind == "hub" and result.changed and result.commit
    api = HfApi()
    history = _commits()
    assert history[0] == result.commit and len(history) == 2  # repo creation + ONE publish

    ds = datasets.load_dataset(REPO, "pairs", split="train")
    assert _rows(ds) == _expected(build)
    assert datasets.get_dataset_config_names(REPO) == ["pairs", "traces"]
    files = api.list_repo_files(REPO, repo_type="dataset")
    assert "plots/delta_step_coherence.png" in files and "recipe.yaml" in files
    # the manifest, in the same commit, lists exactly what the publish wrote
    manifest = api.hf_hub_download(REPO, ".prefdelta-manifest.json", repo_type="dataset")
    assert json.loads(Path(manifest).read_text())["files"] == sorted(result.files)
    assert set(files) == {*result.files, ".prefdelta-manifest.json", ".gitattributes"}

    card = DatasetCard.load(REPO, repo_type="dataset")
    _check_card_metadata(card, ["train"])
    _validate_on_hub(card, monkeypatch)
    assert f'load_dataset(\n    "{REPO}", "pairs"' in card.text

    summary = json.loads((build / "summary.json").read_text())
    tag = f"recipe-{summary['recipe_hash'][:12]}"
    assert result.tag == tag
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert {t.name: t.target_commit for t in refs.tags} == {tag: result.commit}
    assert api.repo_info(REPO, repo_type="dataset", revision=tag).sha == result.commit

    again = publish_build(build, REPO, **PUBLIC)
    assert not again.changed and again.commit == result.commit and again.tag == tag
    assert _commits() == history  # no new commit


def test_hub_republish_with_new_layout_is_one_commit_and_keeps_the_tag(
    build: Path, hub: HubServer
) -> None:
    first = publish_build(build, REPO, test_size=0.2, **PUBLIC)
    assert "data/pairs/test-00000-of-00001.parquet" in HfApi().list_repo_files(
        REPO, repo_type="dataset"
    )
    second = publish_build(build, REPO, **PUBLIC)  # no test split: its file is stale now
    assert second.changed and _commits()[:2] == [second.commit, first.commit]
    files = HfApi().list_repo_files(REPO, repo_type="dataset")
    assert "data/pairs/test-00000-of-00001.parquet" not in files
    assert datasets.get_dataset_config_names(REPO) == ["pairs", "traces"]
    # the recipe tag already marks the first publish: reported, never moved
    assert second.tag is None
    assert any("already marks commit" in w for w in second.warnings)
    refs = HfApi().list_repo_refs(REPO, repo_type="dataset")
    assert [t.target_commit for t in refs.tags] == [first.commit]


def test_hub_publish_without_tag_and_to_a_branch(build: Path, hub: HubServer) -> None:
    result = publish_build(build, REPO, tag=False, revision="v1", **PUBLIC)
    api = HfApi()
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert refs.tags == []
    assert {b.name: b.target_commit for b in refs.branches}["v1"] == result.commit
    ds = datasets.load_dataset(REPO, "pairs", split="train", revision="v1")
    assert len(ds) == len(build_pairs(build))


def _seed_failing_first_commit(rate: float, start: int) -> int:
    """A fault seed under which the first commit request fails (FaultPlan decides each request
    as a pure function of seed, method, path and attempt number)."""
    path = f"/api/datasets/{REPO}/commit/main"
    return next(
        seed
        for seed in range(start, start + 1000)
        if random.Random(f"{seed}:POST:{path}:1").random() < rate
    )


@pytest.mark.parametrize(("start", "phase"), [(0, "before"), (100, "after"), (200, "after")])
def test_hub_publish_survives_faults(build: Path, hub: HubServer, start: int, phase: str) -> None:
    """45% of all requests fail (>= 30% counting retries), the commit among them (phase
    "after": it lands, then its response is lost): the publish ends with exactly one new
    commit holding the whole dataset."""
    rate = 0.45
    seed = _seed_failing_first_commit(rate, start)
    publish_build(build, REPO, tag=False, **PUBLIC)  # an earlier version to protect
    before = _commits()
    newer = make_build(build.parent / "newer", n_prompts=30, score_seed=seed + 100)
    hub.set_faults(rate=rate, seed=seed, phase=phase, max_consecutive=2)
    hub.clear_stats()  # count only this publish's requests
    try:
        result = publish_build(newer, REPO, **PUBLIC)
    except PublishError as exc:
        hub.clear_faults()
        assert _commits() == before  # a failed publish leaves the previous version whole
        pytest.fail(f"publish gave up under faults it should survive: {exc}")
    stats = hub.stats()
    hub.clear_faults()
    commit_faults = [x for x in stats["log"] if x["fault"] and "/commit/" in x["path"]]
    print(f"{stats['faults']} of {stats['requests']} requests failed, {len(commit_faults)} commits")
    assert commit_faults, "the commit itself must have failed at least once"
    assert stats["faults"] >= 0.3 * stats["requests"]
    after = _commits()
    assert after[1:] == before and after[0] == result.commit  # exactly one new commit
    assert _rows(datasets.load_dataset(REPO, "pairs", split="train")) == _expected(newer)
    if phase == "after":  # the first commit landed: the retry found it instead of committing
        assert result.recovered


def test_hub_commit_response_lost_is_detected(build: Path, hub: HubServer) -> None:
    """Every commit lands and then loses its response: the publish sees its own files at the
    head and stops, instead of committing again or failing."""
    hub.set_faults(rate=1.0, paths=(r"/commit/",), phase="after", max_consecutive=None, limit=1)
    result = publish_build(build, REPO, **PUBLIC)
    assert hub.stats()["faults"] == 1
    hub.clear_faults()
    assert result.recovered and result.changed
    assert len(_commits()) == 2 and _commits()[0] == result.commit
    assert result.tag is not None


def test_hub_aborted_commit_leaves_previous_version(
    build: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefdelta.push.hub as hub_module

    monkeypatch.setattr(hub_module, "COMMIT_ATTEMPTS", 3)  # every commit aborts: be quick
    first = publish_build(build, REPO, tag=False, **PUBLIC)
    newer = make_build(build.parent / "newer", score_seed=7)
    hub.set_faults(abort_commit_after_ops=3)
    with pytest.raises(PublishError, match="rerun to retry"):
        publish_build(newer, REPO, tag=False, **PUBLIC)
    hub.clear_faults()
    assert _commits()[0] == first.commit
    assert _rows(datasets.load_dataset(REPO, "pairs", split="train")) == _expected(build)


def test_hub_errors_are_one_line(build: Path, hub: HubServer) -> None:
    shutil.rmtree(build)
    with pytest.raises(BuildFolderError, match="no such build folder"):
        publish_build(build, REPO, **PUBLIC)
    fresh = make_build(build.parent / "fresh")
    hub.set_faults(rate=1.0, paths=(r"/api/repos/create",), statuses=(401,), kinds=("status",))
    with pytest.raises(PublishError, match=f"cannot create or reach {REPO}"):
        publish_build(fresh, REPO, **PUBLIC)


def test_a_killed_publish_leaves_no_staging_folder_for_good(build: Path, tmp_path: Path) -> None:
    """A publish killed mid-way leaves ``.NAME.staging-*`` beside its target: the next
    publish removes those whose process has ended, and no other."""
    import socket
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    host = socket.gethostname()
    out = tmp_path / "published"
    abandoned = tmp_path / f".published.staging-{host}-{int(dead.stdout)}-abc123"
    running = tmp_path / f".published.staging-{host}-{os.getpid()}-def456"
    for folder in (abandoned, running):
        (folder / "data").mkdir(parents=True)
    publish_build(build, out)
    assert not abandoned.exists() and running.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir() if "staging" in p.name) == [running.name]


@pytest.mark.parametrize("target", ["bad id/with space", "a/b/c", "name"])
def test_a_target_that_is_neither_repo_nor_path_is_refused(
    build: Path, tmp_path: Path, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PublishError, match="neither a Hub repo id"):
        publish_build(build, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]  # nothing written
