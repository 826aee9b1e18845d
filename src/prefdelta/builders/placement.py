"""Where a build's steps run: what each copy of a step asks for, whether a Ray cluster has
it, and, on Ray, where each batch ran.

A recipe's ``resources`` become distilabel's ``StepResources`` here. On Ray, a step whose
copies no node can hold would wait for a node forever, and a vLLM step placed without its
GPUs fails to start its engine: both are refused before the pipeline starts, naming the
recipe's field. Each batch a step finishes on Ray is one line of ``logs/ray-placement.jsonl``
in the build folder (step, replica, Ray node, host, pid, rows), so a user sees how the work
spread over the nodes.
"""

# no `from __future__ import annotations`: distilabel finds a step's input by the
# evaluated annotation of `process` (StepInput)
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilabel.steps import StepInput, StepResources
from distilabel.typing import StepOutput
from pydantic import BaseModel

from prefdelta.errors import PrefdeltaError
from prefdelta.recipe import ModelEndpoint
from prefdelta.schema import LOGS, PLACEMENT_LOG

__all__ = [
    "PlacedStep",
    "PlacementError",
    "PlacementLog",
    "check_cluster",
    "placement_log_path",
    "ray_nodes",
    "step_resources",
]


class PlacementError(PrefdeltaError, RuntimeError):
    """Steps that the recipe's ``resources`` say cannot run: the message names the field."""


@dataclass(frozen=True)
class PlacedStep:
    """One step of a pipeline as the recipe places it."""

    where: str  # the recipe's path to the model: "generators.strong", "judge"
    resources: StepResources
    vllm: bool  # distilabel places a vLLM step itself: 1 CPU + its GPUs, on one node

    def per_copy(self) -> dict[str, int]:
        """What Ray must find on one node for each copy (replica) of the step."""
        cpus = 1 if self.vllm else (self.resources.cpus or 0)
        return {"CPU": cpus, "GPU": self.resources.gpus or 0}


def step_resources(endpoints: Sequence[tuple[str, ModelEndpoint]]) -> PlacedStep:
    """The step that ``endpoints`` (recipe path, model) share, placed as they ask: models
    that share a step (one loaded copy) must ask for the same. A vLLM model asks for
    ``tensor_parallel_size`` GPUs unless the recipe says otherwise (distilabel would
    otherwise show it one)."""
    (where, first), *rest = endpoints
    for other_where, other in rest:
        if other.resources != first.resources:
            raise PlacementError(
                f"`{other_where}.resources` differs from `{where}.resources`, but the two "
                "share one loaded model (one step): give them the same resources"
            )
    asked = first.resources
    vllm = first.backend == "vllm"
    gpus = first.tensor_parallel_size if vllm and asked.gpus is None else asked.gpus
    return PlacedStep(
        where, StepResources(replicas=asked.replicas, cpus=asked.cpus, gpus=gpus), vllm
    )


def ray_nodes() -> list[dict[str, float]]:
    """The resources of each live node of the Ray cluster, connecting as distilabel would
    (``RAY_ADDRESS``, else a cluster ``ray start`` runs here, else a new local one)."""
    import ray

    if not ray.is_initialized():
        ray.init()
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def _show(amounts: Mapping[str, float]) -> str:
    return ", ".join(f"{amounts.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def check_cluster(steps: Sequence[PlacedStep], nodes: Sequence[Mapping[str, float]]) -> None:
    """Refuse what the cluster cannot hold, which Ray would wait on forever: a copy of a
    step that fits on no node, or copies that together (a pipeline's steps run at once)
    ask for more than all the nodes have."""
    cluster = "; ".join(f"node {i + 1}: {_show(node)}" for i, node in enumerate(nodes))
    for step in steps:
        need = step.per_copy()
        if not any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
            field = "tensor_parallel_size" if step.vllm else "resources"
            raise PlacementError(
                f"`{step.where}.{field}`: each copy of its step needs {_show(need)} on one "
                f"node, and no node of the Ray cluster has them ({cluster}); ask for less, "
                "or add a node that has them"
            )
    for kind in ("CPU", "GPU"):
        asks = {s.where: s.per_copy()[kind] * s.resources.replicas for s in steps}
        total = sum(asks.values())
        have = sum(node.get(kind, 0) for node in nodes)
        if total > have:
            each = ", ".join(f"{where} {n}" for where, n in asks.items() if n)
            raise PlacementError(
                f"the steps that run together ask for {total} {kind} ({each}: "
                f"`resources.replicas` x per copy), and the Ray cluster has {have:g}; lower "
                "`resources.replicas` or what each copy asks for, or add nodes"
            )


def placement_log_path(store_path: Path) -> Path:
    """Where a build on Ray writes each batch's placement: its build folder's logs."""
    return store_path.parent / LOGS / PLACEMENT_LOG


class PlacementLog(BaseModel):
    """A step that, given ``placement_log`` (on Ray), appends where each of its batches
    ran: one JSON line each, written by the actor that ran it."""

    placement_log: str | None = None

    def process(self, inputs: StepInput) -> StepOutput:  # type: ignore[override]
        for batch in super().process(inputs):  # type: ignore[misc]
            if self.placement_log is not None:
                _record(self.placement_log, getattr(self, "name", ""), len(batch))
            yield batch


def _record(path: str, step: str, rows: int) -> None:
    import ray

    context = ray.get_runtime_context()
    actor = context.get_actor_name() or ""
    replica = actor.rsplit("-", 1)[-1]  # distilabel names it distilabel-<pipeline>-<step>-<n>
    line: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "step": step,
        "replica": int(replica) if replica.isdigit() else None,
        "node_id": context.get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "rows": rows,
        "actor": actor,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # one write of one line, appended: lines of copies on other processes never interleave
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)
