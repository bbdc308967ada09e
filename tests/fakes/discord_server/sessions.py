"""Gateway connections and sessions: sequence numbers, the dispatches a session keeps
for RESUME, shards, intents, and which close codes end a session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.discord_server.constants import Json

NON_RESUMABLE_CLOSE_CODES = frozenset({4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014})
"""Close codes (sent by the gateway) after which a session can't be resumed: bad token,
invalid seq, session timed out, shard/intent errors. Discord closes with the others
(4000 unknown error, 4001-4003, 4005, 4008) and lets the client RESUME."""

CLIENT_INVALIDATING_CLOSE_CODES = frozenset({1000, 1001})
"""A client closing with these ends its session (Discord: "your session will be
invalidated and your bot will appear offline"); discord.py closes with 4000 when it
means to resume."""

MAX_REPLAY = 10_000
"""Dispatches a session keeps for replay; a RESUME from before them is refused."""


@dataclass
class GatewayConnection:
    """One client WebSocket."""

    ws: web.WebSocketResponse
    query: dict[str, str]
    compress: str | None
    """``zlib-stream`` when the fake compresses what it sends; None for plain text."""
    intents: int | None = None
    shard: tuple[int, int] = (0, 1)
    session_id: str | None = None
    identified: bool = False
    identify: Json | None = None
    """The IDENTIFY (or RESUME) payload's ``d``."""
    seq: int = 0
    """The last sequence number sent on this connection."""
    heartbeats: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    path: str = "/gateway"
    """The URL path the client connected to (``/resume-gateway`` for READY's
    ``resume_gateway_url``)."""
    session: GatewaySession | None = None
    """The session this connection carries (after IDENTIFY or RESUME)."""
    transport: asyncio.Transport | None = None
    client_close_code: int | None = None
    """The code of the client's close frame; None when it sent none."""
    server_close_code: int | None = None
    """The code the fake closed with; None when it did not close it."""
    killed: bool = False
    """Cut by the fake without a close frame (:meth:`FakeDiscord.kill_connections`)."""
    _zlib: Any = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if self.compress == "zlib-stream":
            self._zlib = zlib.compressobj()

    def owns(self, guild_id: int | None) -> bool:
        """Whether events of this guild (None: DMs, which shard 0 gets) go to this shard."""
        return shard_owns(self.shard, guild_id)

    def wants(self, intent: int | None) -> bool:
        return intent is None or self.intents is None or bool(self.intents & intent)

    @property
    def ends_session(self) -> bool:
        """Whether the way this connection closed invalidates its session. The fake's
        own close code wins over the client's (aiohttp answers any close with 1000)."""
        if self.killed:
            return False
        if self.server_close_code is not None:
            return self.server_close_code in NON_RESUMABLE_CLOSE_CODES
        return self.client_close_code in CLIENT_INVALIDATING_CLOSE_CODES

    async def send(self, payload: Json) -> None:
        async with self._lock:
            await self._send_locked(payload)

    async def send_dispatch(self, event: str, data: Json) -> None:
        """A DISPATCH numbered by the session (by the connection before IDENTIFY)."""
        async with self._lock:
            if self.session is not None:
                payload = self.session.record(event, data)
            else:
                payload = {"op": 0, "t": event, "s": self.seq + 1, "d": data}
            self.seq = int(payload["s"])
            await self._send_locked(payload)

    async def _send_locked(self, payload: Json) -> None:
        if self.ws.closed or self.killed:
            return
        text = json.dumps(payload, separators=(",", ":"))
        with contextlib.suppress(ConnectionError):
            if self._zlib is not None:
                chunk = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(chunk)
            else:
                await self.ws.send_str(text)


@dataclass
class GatewaySession:
    """What IDENTIFY starts and RESUME continues: the sequence numbers and every
    dispatch, so a client that lost its connection gets what it missed.

    Discord keeps a session after its connection drops (unless the client closed it
    with 1000/1001 or the gateway closed it with a non-resumable code) and buffers its
    events; a RESUME with the last ``seq`` the client saw replays everything after it,
    then RESUMED. The fake keeps it ``resume_timeout`` seconds (Discord doesn't say how
    long; observed: a few minutes)."""

    id: str
    intents: int | None
    shard: tuple[int, int]
    identify: Json
    seq: int = 0
    """The last sequence number given out."""
    events: list[Json] = field(default_factory=list)
    """Every DISPATCH payload (with its ``s``), oldest first (the last ``MAX_REPLAY``)."""
    connection: GatewayConnection | None = None
    """The open connection carrying it; None while the client is away."""
    state: str = "connected"
    """``connected``, ``resumable`` (no connection, may RESUME until
    ``resumable_until``) or ``invalidated``."""
    resumable_until: float | None = None
    resumes: int = 0
    """Accepted RESUMEs."""

    def owns(self, guild_id: int | None) -> bool:
        return shard_owns(self.shard, guild_id)

    def wants(self, intent: int | None) -> bool:
        return intent is None or self.intents is None or bool(self.intents & intent)

    def live(self, now: float) -> bool:
        """Connected, or resumable and not expired (expiry is applied here, lazily)."""
        if self.state == "resumable" and (
            self.resumable_until is None or now >= self.resumable_until
        ):
            self.state = "invalidated"
        return self.state != "invalidated"

    def record(self, event: str, data: Json) -> Json:
        """Numbers a dispatch and keeps it for replay; returns the payload to send."""
        self.seq += 1
        payload: Json = {"op": 0, "t": event, "s": self.seq, "d": data}
        self.events.append(payload)
        if len(self.events) > MAX_REPLAY:
            del self.events[: len(self.events) - MAX_REPLAY]
        return payload

    def after(self, seq: int) -> list[Json] | None:
        """The dispatches after ``seq``; None when ``seq`` can't be resumed from (ahead of
        the session, or older than what it kept)."""
        if seq > self.seq:
            return None
        oldest = int(self.events[0]["s"]) if self.events else self.seq + 1
        if seq < oldest - 1:
            return None
        return [e for e in self.events if int(e["s"]) > seq]


def shard_owns(shard: tuple[int, int], guild_id: int | None) -> bool:
    shard_id, count = shard
    if guild_id is None:
        return shard_id == 0
    return (guild_id >> 22) % count == shard_id
