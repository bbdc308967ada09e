"""Private Redis servers for ``bench.topologies``: one server, a Redis Cluster
(three masters, a replica each) and a master with one replica behind three
sentinels, all started from the machine's ``redis-server`` (7 or newer, on
``PATH``) on free 127.0.0.1 ports, no persistence, and killed on exit.

The cluster and Sentinel set-ups are the test suite's (``tests.redis_servers``);
the single server gets the same flags as theirs, so the topologies differ in
shape only. Nothing here touches ``REDIS_URL``'s Redis.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.state.topology import Topology
from tests.redis_servers import START_TIMEOUT, LocalCluster, LocalSentinel, Node

KINDS = ("single", "cluster", "sentinel")


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    """``single``, ``cluster`` or ``sentinel``."""
    topology: Topology
    masters: tuple[tuple[str, int], ...]
    """The servers taking writes (host, port): for their ``INFO commandstats``."""
    replicas: int
    """Replicas of each master: what ``WAIT`` can wait for."""


def _single_argv(directory: Path) -> list[str]:
    return [
        *("--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"),
        *("--dir", str(directory)),
    ]


@contextlib.contextmanager
def started(kinds: Sequence[str] = KINDS) -> Iterator[dict[str, Target]]:
    """The topologies named in ``kinds``, ready; every process is stopped on exit."""
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crtopo-")))
        targets: dict[str, Target] = {}
        if "single" in kinds:
            node = Node(directory, "single")
            stack.callback(node.kill)
            node.spawn(lambda port: ["--port", str(port), *_single_argv(directory)])
            node.wait_answers(time.monotonic() + START_TIMEOUT)
            targets["single"] = Target("single", Topology(node.url), (node.address,), 0)
        if "cluster" in kinds:
            cluster = LocalCluster(directory / "cluster")
            stack.callback(cluster.stop)
            cluster.start()
            masters = tuple(node.address for node in cluster.masters())
            targets["cluster"] = Target("cluster", Topology(cluster.url, cluster=True), masters, 1)
        if "sentinel" in kinds:
            sentinel = LocalSentinel(directory / "sentinel")
            stack.callback(sentinel.stop)
            sentinel.start()
            topology = Topology(sentinels=tuple(sentinel.sentinels), service=sentinel.service)
            targets["sentinel"] = Target("sentinel", topology, (sentinel.master.address,), 1)
        yield targets
