"""A private redis-server on a TCP port that tests may freeze with SIGSTOP.

A stopped server is what a hung or partitioned Redis looks like to a client:
the kernel still accepts connections and buffers commands, but nothing ever
answers. Only a server started here may be paused, never the shared one at
``REDIS_URL``, which other suites are using.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import redis
import redis.asyncio

from core.state.connection import redis_server_executable

START_TIMEOUT = 10.0
_T = TypeVar("_T")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PausableRedis:
    """``redis-server`` on 127.0.0.1:<free port>, no persistence, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        executable = shutil.which("redis-server") or redis_server_executable()
        for _ in range(5):  # the free port may be taken between probe and bind
            self.port = _free_port()
            log = self.directory / f"redis-{self.port}.log"
            with open(log, "ab") as output:
                self._process = subprocess.Popen(
                    [
                        executable,
                        *("--port", str(self.port), "--bind", "127.0.0.1"),
                        *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                        *("--dir", str(self.directory)),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                )
            deadline = time.monotonic() + START_TIMEOUT
            while self._process.poll() is None and time.monotonic() < deadline:
                if self._answers():
                    return self.url
                time.sleep(0.01)
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.directory}")

    def pause(self) -> None:
        """SIGSTOP: connections are accepted and commands buffered, never answered."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        if self._process is not None and self._paused:
            os.kill(self._process.pid, signal.SIGCONT)
        self._paused = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Paused inside, running again after, whatever the block raised."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def stop(self) -> None:
        self.resume()  # a stopped process can't act on SIGTERM
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.5)
        try:  # this process, not another server that took the port first
            serving = int(client.info("server")["process_id"])
        except (redis.RedisError, OSError, KeyError, ValueError):
            return False
        finally:
            client.close()
        return self._process is not None and serving == self._process.pid


MARGIN = 0.5
"""Slack on top of a bound for a loaded test machine. A call that is not bounded
never returns while the server is paused, so any finite margin tells them apart."""


async def timed(awaitable: Awaitable[_T]) -> tuple[_T | BaseException, float]:
    """The outcome of ``awaitable`` (its result, or what it raised) and the seconds
    it took; a call still running after ``SAFETY_NET`` seconds fails the test
    rather than hanging it."""
    start = time.monotonic()
    outcome: _T | BaseException
    try:
        outcome = await asyncio.wait_for(awaitable, SAFETY_NET)
    except Exception as exc:
        outcome = exc
    return outcome, time.monotonic() - start


SAFETY_NET = 10.0


async def settled(client: redis.asyncio.Redis, live: int = 1) -> None:
    """Wait until the resumed server has dealt with every connection the pause left
    behind: a call that timed out was still delivered, and the server runs it (and
    then sees the connection closed) when it resumes, so a timed-out write may land
    late. Once only ``live`` connections remain, nothing more will."""
    for _ in range(int(SAFETY_NET / 0.01)):
        clients = await client.client_list()
        if len(clients) <= live:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the server still has {len(clients)} connections")
