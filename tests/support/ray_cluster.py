"""A Ray cluster of several nodes on this machine (``ray.cluster_utils.Cluster``), for
builds that must really spread over nodes: ``from support.ray_cluster import ray_cluster``.

Each node is a raylet of its own with the CPUs it is given (keep them few: the suite shares
a small machine). A build reaches the cluster through ``RAY_ADDRESS`` (:attr:`address`),
as a user's build reaches theirs. The cluster is shut down however the block ends; when it
ends with an error, the tail of every Ray log is printed first, since a step that failed
on a node says why only there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# each node's object store: Ray's minimum is 75 MiB; the default takes 30% of the memory
_OBJECT_STORE = 80 * 2**20


@dataclass(frozen=True)
class RayCluster:
    """A running cluster: its address and each node's id (as Ray reports them)."""

    address: str
    node_ids: list[str]
    session_dir: Path


@contextlib.contextmanager
def ray_cluster(cpus_per_node: list[int]) -> Iterator[RayCluster]:
    """Start one node per entry of ``cpus_per_node`` (the first is the head), yield the
    cluster, and shut it down at the end, printing the Ray logs if the block failed."""
    from ray.cluster_utils import Cluster

    cluster: Any = Cluster()
    try:
        nodes = [
            cluster.add_node(
                num_cpus=cpus,
                num_gpus=0,
                object_store_memory=_OBJECT_STORE,
                include_dashboard=False,
            )
            for cpus in cpus_per_node
        ]
        cluster.wait_for_nodes()
        session = Path(cluster.head_node.get_session_dir_path())
        try:
            yield RayCluster(cluster.address, [n.node_id for n in nodes], session)
        except BaseException:
            print_ray_logs(session)
            raise
    finally:
        cluster.shutdown()


def print_ray_logs(session: Path, lines: int = 30) -> None:
    """The last ``lines`` of each non-empty error log of a Ray session and of each worker's
    output (where a step's actor writes), each under its name."""
    for log in sorted((session / "logs").glob("*")):
        wanted = log.suffix == ".err" or log.name.startswith("worker-")
        if not wanted or not log.is_file() or not log.stat().st_size:
            continue
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"----- ray log {log.name} (last {len(tail)} lines)")
        print("\n".join(tail))
