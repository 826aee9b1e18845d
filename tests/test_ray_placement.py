"""A recipe's ``resources`` and Ray: what each step asks for, what is refused before a
pipeline starts, and a build that really spreads over the nodes of a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from prefdelta.builders.placement import PlacementError, check_cluster, step_resources
from prefdelta.recipe import GeneratorConfig, JudgeConfig, RecipeError, parse_recipe
from prefdelta.schema import LOGS, PAIRS_FILE, PLACEMENT_LOG, STORE, TRACES_FILE
from support.api_build import interrupt_build, write_api_recipe
from support.model_fixtures import ChatServer, chat_server  # noqa: F401  (a fixture)
from support.ray_cluster import ray_cluster
from support.store_fixtures import InspectableStore

RECIPE = """
name: placed
prompts: {{path: prompts.jsonl}}
generators:
  a: {{model: org/a, backend: {backend}, {extra}}}
  b: {{model: org/b, backend: transformers}}
pairing: {{chosen: a, rejected: [b]}}
judge: {{model: org/j, backend: transformers}}
{tail}
"""


def _recipe(tmp_path: Path, backend: str, extra: str, tail: str = "") -> Any:
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "1+1?"}\n')
    text = RECIPE.format(backend=backend, extra=extra, tail=tail)
    return parse_recipe(text, source="r.yaml", base_dir=tmp_path)


@pytest.mark.parametrize(
    ("backend", "extra", "tail", "expected"),
    [
        (
            "vllm",
            "tensor_parallel_size: 2, resources: {gpus: 1}",
            "ray: true",
            "generators.a: `resources.gpus` is 1 but `tensor_parallel_size` is 2",
        ),
        ("vllm", "resources: {cpus: 2}", "ray: true", "generators.a: `resources.cpus`: on Ray"),
        (
            "openai",
            "base_url: 'http://127.0.0.1:1/v1', resources: {gpus: 1}",
            "",
            "generators.a: `resources.gpus`: backend 'openai' calls a server",
        ),
        (
            "transformers",
            "resources: {cpus: 2}",
            "",
            "`generators.a.resources.cpus` reserves CPU cores on Ray: set `ray: true`",
        ),
        ("transformers", "resources: {replicas: 0}", "", "generators.a.resources.replicas"),
        ("transformers", "resources: {cpu: 1}", "", "did you mean 'cpus'"),
    ],
    ids=["vllm-fewer-gpus", "vllm-cpus", "api-gpus", "cpus-without-ray", "no-replicas", "typo"],
)
def test_resources_the_recipe_refuses(
    tmp_path: Path, backend: str, extra: str, tail: str, expected: str
) -> None:
    with pytest.raises(RecipeError) as info:
        _recipe(tmp_path, backend, extra, tail)
    assert len(info.value.lines) == 1 and expected in info.value.lines[0], info.value.lines


def test_a_vllm_step_asks_for_its_tensor_parallel_gpus(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "vllm", "tensor_parallel_size: 2, resources: {replicas: 3}")
    placed = step_resources([("generators.a", recipe.generators["a"])])
    assert (placed.resources.replicas, placed.resources.gpus, placed.vllm) == (3, 2, True)
    plain = step_resources([("generators.b", recipe.generators["b"])])
    assert (plain.resources.replicas, plain.resources.gpus, plain.resources.cpus) == (1, None, None)


def test_models_sharing_a_step_must_ask_for_the_same() -> None:
    one = GeneratorConfig(model="m", backend="transformers", resources={"replicas": 2})
    two = GeneratorConfig(model="m", backend="transformers")
    with pytest.raises(PlacementError, match=r"`generators.y.resources` differs from"):
        step_resources([("generators.x", one), ("generators.y", two)])


CPU_NODES = [{"CPU": 1.0}, {"CPU": 1.0}]


@pytest.mark.parametrize(
    ("model", "nodes", "expected"),
    [
        (  # a vLLM engine on a cluster without GPUs never starts: said before the run
            GeneratorConfig(model="m", backend="vllm"),
            CPU_NODES,
            r"`generators.a.tensor_parallel_size`: each copy of its step needs 1 CPU, 1 GPU",
        ),
        (
            GeneratorConfig(model="m", backend="vllm", tensor_parallel_size=2),
            [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}],
            r"needs 1 CPU, 2 GPU on one node",
        ),
        (
            GeneratorConfig(model="m", backend="transformers", resources={"cpus": 2}),
            CPU_NODES,
            r"`generators.a.resources`: each copy of its step needs 2 CPU, 0 GPU on one node, "
            r"and no node of the Ray cluster has them \(node 1: 1 CPU, 0 GPU; node 2",
        ),
        (
            GeneratorConfig(
                model="m", backend="transformers", resources={"cpus": 1, "replicas": 3}
            ),
            CPU_NODES,
            r"ask for 3 CPU \(generators.a 3: .*\), and the Ray cluster has 2",
        ),
    ],
    ids=["vllm-no-gpu", "vllm-split-gpus", "cpus-on-no-node", "replicas-over-cluster"],
)
def test_steps_the_cluster_cannot_hold_are_refused(
    model: GeneratorConfig, nodes: list[dict[str, float]], expected: str
) -> None:
    with pytest.raises(PlacementError, match=expected):
        check_cluster([step_resources([("generators.a", model)])], nodes)


def test_steps_the_cluster_holds_pass() -> None:
    judge = JudgeConfig(model="j", backend="vllm", tensor_parallel_size=2)
    gen = GeneratorConfig(model="m", backend="transformers", resources={"cpus": 1, "replicas": 2})
    nodes = [{"CPU": 1.0, "GPU": 2.0}, {"CPU": 1.0}]
    check_cluster([step_resources([("judge", judge)])], nodes)
    check_cluster([step_resources([("generators.a", gen)])], nodes)


def _build(recipe: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Build into ``out`` given relative to the build's folder, as users give it: Ray's
    workers run elsewhere (here, where the test started the cluster)."""
    cmd = [sys.executable, "-m", "prefdelta", "build", str(recipe), "-o", out.name, "--no-publish"]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=out.parent,
        env={**os.environ, **env},
    )


def _tables(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: pq.read_table(out / name).to_pylist() for name in (TRACES_FILE, PAIRS_FILE)}


@pytest.mark.slow
def test_a_build_on_two_ray_nodes(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ray: true` on a cluster of two one-CPU nodes: a generator and the judge with two
    copies of a whole node's CPU each run one copy on each node, as the placement log in
    the build's logs shows batch by batch; the store and the tables are a local build's."""
    prompts = 8
    local_recipe = write_api_recipe(tmp_path / "local", chat_server, prompts)
    chat_server.state.delay_s = 0.2  # a batch lasts long enough for each copy to take some
    data = yaml.safe_load(local_recipe.read_text())
    for model in (data["generators"]["strong"], data["judge"]):
        model["resources"] = {"replicas": 2, "cpus": 1}
    data["judge"]["batch_size"] = 2
    data["ray"] = True
    on_ray = tmp_path / "ray" / "recipe.yaml"
    on_ray.parent.mkdir()
    (on_ray.parent / "prompts.jsonl").write_text(
        (local_recipe.parent / "prompts.jsonl").read_text()
    )
    on_ray.write_text(yaml.safe_dump(data))
    for model in (data["generators"]["strong"], data["judge"]):
        del model["resources"]["cpus"]  # Ray's only
    del data["ray"]
    local_recipe.write_text(yaml.safe_dump(data))
    too_big = on_ray.with_name("too-big.yaml")
    data["ray"] = True
    data["generators"]["weak"]["resources"] = {"cpus": 2}
    too_big.write_text(yaml.safe_dump(data))

    local = tmp_path / "local-out"
    done = _build(local_recipe, local, {})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (local / LOGS / PLACEMENT_LOG).exists()  # a local build places nothing

    out = tmp_path / "ray-out"
    nodes = tmp_path / "nodes"  # the nodes' own folder, where their workers run
    nodes.mkdir()
    monkeypatch.chdir(nodes)
    with ray_cluster([1, 1]) as cluster:
        env = {"RAY_ADDRESS": cluster.address}
        # a copy that no node can hold would wait for one forever: refused, one line
        refused = _build(too_big, tmp_path / "too-big-out", env)
        assert refused.returncode == 1, refused.stdout[-3000:] + refused.stderr[-3000:]
        assert "`generators.weak.resources`: each copy of its step needs 2 CPU" in refused.stderr
        assert "Traceback" not in refused.stdout + refused.stderr

        done = _build(on_ray, out, env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        placements = [
            json.loads(line) for line in (out / LOGS / PLACEMENT_LOG).read_text().splitlines()
        ]
        # every batch ran in a Ray actor on a node of this cluster, never in the build itself
        assert {p["node_id"] for p in placements} <= set(cluster.node_ids), placements
        rows: dict[str, int] = {}
        for p in placements:
            rows[p["step"]] = rows.get(p["step"], 0) + p["rows"]
        assert rows == {"generate_strong": prompts, "generate_weak": prompts, "judge": 2 * prompts}
        for step in ("generate_strong", "judge"):  # two copies, a node each
            copies = {(p["replica"], p["node_id"]) for p in placements if p["step"] == step}
            assert {r for r, _ in copies} == {0, 1}, placements
            assert {n for _, n in copies} == set(cluster.node_ids), placements
            pids = {p["pid"] for p in placements if p["step"] == step}
            assert len(pids) == 2 and os.getpid() not in pids

    # Ray is where the work ran, not what it is: the same store and the same tables
    assert _tables(out) == _tables(local)
    ray_store, local_store = InspectableStore(out / STORE), InspectableStore(local / STORE)
    for kind in ("generation", "judgment"):
        assert ray_store.all_values(kind) == local_store.all_values(kind), kind


@pytest.mark.slow
def test_ctrl_c_stops_a_ray_build_within_its_batch(
    tmp_path: Path,
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C reaches a Ray build's driver, never the actors that ask its rows (they run on
    the cluster's nodes). The build still stops within a batch: each generator holds all
    its rows in one batch, and after Ctrl-C no new row is asked, every answer asked for is
    stored, the judge is never asked, and a rerun asks only what is left."""
    prompts = 30
    recipe = write_api_recipe(tmp_path, chat_server, prompts, batch_size=prompts, concurrency=2)
    data = yaml.safe_load(recipe.read_text())
    data["ray"] = True
    recipe.write_text(yaml.safe_dump(data))
    chat_server.state.delay_s = 0.5  # a batch of 30 rows, 2 at a time: 7.5 s each generator
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "prefdelta", "build", str(recipe), "-o", str(out), "--no-publish"]
    log = tmp_path / "ctrl-c.log"

    def asked(model_prefix: str) -> int:
        return sum(b["model"].startswith(model_prefix) for b in chat_server.state.bodies)

    with ray_cluster([1]) as cluster:
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        code = interrupt_build(cmd, out / STORE, log)
        said = log.read_text(errors="replace")
        assert code == 130, said[-3000:]
        stored = InspectableStore(out / STORE).count_all("generation")
        assert asked("gen-") == stored, said[-3000:]  # each answer asked for is kept
        assert stored < prompts, (stored, said[-3000:])  # not the batches' 2 x 30 rows
        assert asked("the-judge") == 0
        assert not any(p.name.startswith(".stop") for p in out.iterdir())

        chat_server.state.delay_s = 0.01
        before = asked("gen-")
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert asked("gen-") - before == 2 * prompts - stored
    assert pq.read_table(out / TRACES_FILE).num_rows == 2 * prompts
