"""The gateway WebSocket: HELLO, IDENTIFY (token, intents, shard), READY and
GUILD_CREATE, heartbeats, RESUME with replay, REQUEST_GUILD_MEMBERS, dispatches to
live sessions, and the ways a test cuts, closes or expires connections."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord_server.constants import (
    INTENT_GUILD_MEMBERS,
    INTENT_GUILDS,
    PRIVILEGED_INTENTS,
    Json,
)
from tests.fakes.discord_server.payloads import Payloads
from tests.fakes.discord_server.sessions import GatewayConnection, GatewaySession


class Gateway(Payloads):
    """Discord's gateway for the bot's clients."""

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        query = dict(request.query)
        self.gateway_queries.append(query)
        compress = query.get("compress") if query.get("compress") == "zlib-stream" else None
        conn = GatewayConnection(
            ws=ws, query=query, compress=compress, path=request.path, transport=request.transport
        )
        self.connections.append(conn)
        try:
            await conn.send(
                {
                    "op": 10,
                    "d": {"heartbeat_interval": self.heartbeat_interval_ms},
                    "s": None,
                    "t": None,
                }
            )
            while True:
                # receive() rather than ``async for``: the loop must see the client's
                # CLOSE frame (and its code) to know whether the session ends.
                msg = await ws.receive()
                if msg.type == WSMsgType.TEXT:
                    payload = json.loads(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    payload = json.loads(zlib.decompress(msg.data))
                else:
                    if msg.type == WSMsgType.CLOSE:
                        conn.client_close_code = int(msg.data)
                    break
                self.gateway_sends.append(payload)
                await self._on_gateway_op(conn, payload)
        finally:
            self.connections.remove(conn)
            self._detach(conn)
            conn.closed.set()
            await self._notify()
        return ws

    def _detach(self, conn: GatewayConnection) -> None:
        """The connection is gone: its session ends, or waits for a RESUME."""
        session = conn.session
        if session is None or session.connection is not conn:
            return
        session.connection = None
        if conn.ends_session:
            session.state = "invalidated"
        else:
            session.state = "resumable"
            session.resumable_until = time.monotonic() + self.resume_timeout

    async def _close(self, conn: GatewayConnection, code: int, reason: bytes) -> None:
        conn.server_close_code = code
        await conn.ws.close(code=code, message=reason)

    async def _on_gateway_op(self, conn: GatewayConnection, payload: Json) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            conn.heartbeats += 1
            if self.ack_heartbeats:
                await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, data or {})
        elif op == 6:
            await self._resume(conn, data or {})
        elif op == 8:
            await self._request_members(conn, data or {})
        elif op == 3:
            pass  # presence update: accepted, nothing to do
        else:
            await self._close(conn, 4001, b"Unknown opcode.")

    def _token_ok(self, token: Any) -> bool:
        return isinstance(token, str) and token.removeprefix("Bot ") == self.bot_token

    async def _identify(self, conn: GatewayConnection, data: Json) -> None:
        if conn.identified:
            await self._close(conn, 4005, b"Already authenticated.")
            return
        if not self._token_ok(data.get("token")):
            await self._close(conn, 4004, b"Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int):
            await self._close(conn, 4013, b"Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS and not self.allow_privileged_intents:
            await self._close(conn, 4014, b"Disallowed intent(s).")
            return
        shard = tuple(data.get("shard") or (0, 1))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            await self._close(conn, 4010, b"Invalid shard.")
            return
        conn.intents, conn.shard, conn.identify = intents, (int(shard[0]), int(shard[1])), data
        conn.session_id = uuid.uuid4().hex
        conn.identified = True
        session = GatewaySession(conn.session_id, conn.intents, conn.shard, data, connection=conn)
        conn.session = session
        self.sessions[session.id] = session
        self.identifies.append(data)
        guilds = [g for g in self.guilds.values() if conn.owns(g.id)]
        await conn.send_dispatch(
            "READY",
            {
                "v": 10,
                "user": {**self.bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
                "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
                "session_id": conn.session_id,
                "session_type": "normal",
                "resume_gateway_url": self.resume_gateway_url,
                "shard": list(conn.shard),
                "application": {"id": str(self.app_id), "flags": 1 << 19 | 1 << 23},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "user_settings": {},
                "auth": {},
                "_trace": ['["fake-discord",{"micros":0}]'],
            },
        )
        if conn.wants(INTENT_GUILDS):
            for guild in guilds:
                await conn.send_dispatch("GUILD_CREATE", self._guild_create(guild, conn))
        self._ready.set()
        await self._notify()

    async def _resume(self, conn: GatewayConnection, data: Json) -> None:
        """Discord's RESUME: replay every dispatch after the client's ``seq``, then
        RESUMED. An unknown, ended or expired session gets op 9 INVALID_SESSION with
        ``d: false`` (the client must IDENTIFY anew); a ``seq`` the session can't replay
        from closes the connection with 4007 (Invalid seq)."""
        if conn.identified:
            await self._close(conn, 4005, b"Already authenticated.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        if (
            not self._token_ok(data.get("token"))
            or session is None
            or not session.live(time.monotonic())
        ):
            self.invalid_sessions.append({**data, "token": "***"})
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            await self._notify()
            return
        seq = data.get("seq")
        missed = session.after(seq if isinstance(seq, int) else 0)
        if missed is None:
            await self._close(conn, 4007, b"Invalid seq.")
            return
        previous = session.connection
        if previous is not None and previous is not conn:
            # The client gave that connection up (a zombie): it no longer carries the
            # session, and Discord cuts it.
            previous.session = None
            self._kill(previous)
        async with conn._lock:
            conn.intents, conn.shard = session.intents, session.shard
            conn.session_id, conn.identify, conn.identified = session.id, data, True
            conn.session = session
            session.connection, session.state, session.resumable_until = conn, "connected", None
            session.resumes += 1
            for payload in missed:
                await conn._send_locked(payload)
            resumed = session.record("RESUMED", {"_trace": ['["fake-discord",{"micros":0}]']})
            conn.seq = int(resumed["s"])
            await conn._send_locked(resumed)
        self.resumes.append(
            {"session_id": session.id, "seq": seq, "replayed": len(missed), "path": conn.path}
        )
        await self._notify()

    async def _request_members(self, conn: GatewayConnection, data: Json) -> None:
        guild = self.guilds.get(int(data.get("guild_id") or 0))
        if guild is None or not conn.wants(INTENT_GUILD_MEMBERS):
            return
        members = [self.bot, *guild.members]
        wanted = data.get("user_ids")
        if wanted:
            ids = {int(u) for u in (wanted if isinstance(wanted, list) else [wanted])}
            members = [m for m in members if m.id in ids]
        await conn.send_dispatch(
            "GUILD_MEMBERS_CHUNK",
            {
                "guild_id": str(guild.id),
                "members": [self._member_payload(guild, m) for m in members],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
                **({"nonce": data["nonce"]} if data.get("nonce") else {}),
            },
        )

    async def wait_ready(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - bounded by design
        """Until a client has IDENTIFIED and got READY (and its GUILD_CREATEs)."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def dispatch(
        self,
        event: str,
        data: Json,
        *,
        guild_id: int | None = None,
        intent: int | None = None,
        transform: Callable[[GatewaySession, Json], Json] | None = None,
        shard: int | None = None,
    ) -> int:
        """Sends a DISPATCH to every live session of the guild's shard (shard 0 for DMs)
        whose intents include ``intent``; returns how many sessions got it. A session
        whose connection dropped keeps it for its RESUME. ``shard``: to the sessions of
        that shard instead, whatever the guild (a test's choice; Discord never does)."""
        sent = 0
        now = time.monotonic()
        for session in list(self.sessions.values()):
            owned = session.owns(guild_id) if shard is None else session.shard[0] == shard
            if not session.live(now) or not owned or not session.wants(intent):
                continue
            payload = transform(session, data) if transform else data
            conn = session.connection
            if conn is not None:
                await conn.send_dispatch(event, payload)
            else:
                session.record(event, payload)
            sent += 1
        return sent

    async def send_op(self, op: int, data: Any = None) -> None:
        """A raw opcode to every connection (7 RECONNECT, 9 INVALID_SESSION, ...)."""
        for conn in list(self.connections):
            await conn.send({"op": op, "d": data, "s": None, "t": None})

    async def disconnect_all(self, code: int = 4000) -> None:
        """Closes every gateway connection with this close code (4000, the default,
        lets clients RESUME; a code of ``NON_RESUMABLE_CLOSE_CODES`` ends sessions)."""
        for conn in list(self.connections):
            await self._close(conn, code, b"closed by the fake")

    async def kill_connections(self, session_id: str | None = None) -> int:
        """Cuts gateway connections (all, or the one carrying ``session_id``) without a
        close frame, as a network failure does: their sessions stay resumable. Returns
        how many were cut; waits until the fake has seen them close."""
        cut = [
            c
            for c in list(self.connections)
            if session_id is None or (c.session is not None and c.session.id == session_id)
        ]
        for conn in cut:
            self._kill(conn)
        for conn in cut:
            await asyncio.wait_for(conn.closed.wait(), 5)
        return len(cut)

    def _kill(self, conn: GatewayConnection) -> None:
        conn.killed = True
        if conn.transport is not None:
            conn.transport.abort()

    def expire_sessions(self) -> None:
        """Every session without a connection expires now (as after ``resume_timeout``)."""
        for session in self.sessions.values():
            if session.state == "resumable":
                session.state = "invalidated"

    @property
    def live_sessions(self) -> list[GatewaySession]:
        """Sessions connected or still resumable."""
        now = time.monotonic()
        return [s for s in self.sessions.values() if s.live(now)]

    def _require_client(self) -> None:
        if not any(c.identified for c in self.connections) and not self.live_sessions:
            raise RuntimeError("no identified gateway client: call wait_ready() first")
