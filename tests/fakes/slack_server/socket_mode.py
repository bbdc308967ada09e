"""Socket Mode: the WebSocket apps connect to with an ``apps.connections.open``
ticket (hello, too many connections, disconnect), envelopes sent round robin over
the open connections, and their acks, in time or late, with Slack's retries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.slack_server.events import Envelopes
from tests.fakes.slack_server.params import JSON
from tests.fakes.slack_server.records import Delivery, SocketConnection


class SocketMode(Envelopes):
    """Socket Mode connections and the envelopes sent over them."""

    @property
    def open_connections(self) -> list[SocketConnection]:
        return [c for c in self.connections if c.closed_at is None]

    async def wait_connected(self, timeout: float = 5.0, count: int = 1) -> None:  # noqa: ASYNC109
        """Until ``count`` Socket Mode connections are open (and greeted with hello)."""
        await self.wait_for(lambda: len(self.open_connections) >= count, timeout)

    async def deliver_socket(
        self,
        event: JSON,
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        event_id: str | None = None,
        timeout: float = 3.0,  # noqa: ASYNC109
    ) -> Delivery:
        """Send ``event`` as an ``events_api`` envelope to a connected client (round
        robin) and return once it is acked; TimeoutError if no ack within ``timeout``
        (waiting for a connection counts against it)."""
        envelope = self.event_envelope(event, event_id=event_id)
        return await self.send_envelope(
            "events_api",
            envelope,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
            timeout=timeout,
        )

    async def deliver_socket_with_retries(
        self,
        event: JSON,
        *,
        ack_timeout: float = 3.0,
        retry_delays: tuple[float, ...] | None = None,
        event_id: str | None = None,
    ) -> list[Delivery]:
        """Socket Mode delivery with Slack's retries (``retry_attempt``/``retry_reason:
        "timeout"``, same ``event_id``, new envelope) until an ack arrives in time."""
        envelope = self.event_envelope(event, event_id=event_id)
        delays = self.retry_delays if retry_delays is None else retry_delays
        attempts: list[Delivery] = []
        for attempt in range(len(delays) + 1):
            if attempt:
                await asyncio.sleep(delays[attempt - 1])
            delivery = await self._send_envelope(
                "events_api",
                envelope,
                accepts_response_payload=False,
                retry_attempt=attempt,
                retry_reason="timeout" if attempt else "",
                timeout=ack_timeout,
            )
            attempts.append(delivery)
            if delivery.acked:
                break
        return attempts

    async def deliver_interaction(
        self,
        payload: JSON,
        timeout: float = 3.0,  # noqa: ASYNC109
    ) -> Delivery:
        """Send an ``interactive`` envelope (``block_actions``…) and wait for its ack."""
        return await self.send_envelope(
            "interactive", payload, accepts_response_payload=False, timeout=timeout
        )

    async def send_envelope(
        self,
        kind: str,
        payload: JSON,
        *,
        accepts_response_payload: bool = False,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        timeout: float = 3.0,  # noqa: ASYNC109
    ) -> Delivery:
        """Any Socket Mode envelope (``events_api``, ``interactive``, ``slash_commands``);
        returns the acked delivery, raises TimeoutError without an ack in time."""
        delivery = await self._send_envelope(
            kind,
            payload,
            accepts_response_payload=accepts_response_payload,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
            timeout=timeout,
        )
        if delivery.error == "timeout":
            raise TimeoutError(f"no ack for {kind} envelope {delivery.envelope_id}")
        return delivery

    async def _send_envelope(
        self,
        kind: str,
        payload: JSON,
        *,
        accepts_response_payload: bool,
        retry_attempt: int | None,
        retry_reason: str | None,
        timeout: float,  # noqa: ASYNC109
    ) -> Delivery:
        envelope_id = str(uuid.uuid4())
        envelope: JSON = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api":
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = retry_reason or ""
        delivery = Delivery(
            transport="socket",
            kind=kind,
            payload=payload,
            event_id=payload.get("event_id") if kind == "events_api" else None,
            attempt=retry_attempt or 0,
            retry_reason=retry_reason or None,
            sent_at=self.clock(),
            envelope_id=envelope_id,
        )
        self.deliveries.append(delivery)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                connection = await self._next_connection()
                delivery.connection_id = connection.id
                delivery.sent_at = self.clock()
                self._unacked[envelope_id] = delivery
                self._ack_waiters[envelope_id] = waiter
                await connection.ws.send_str(json.dumps(envelope))
                await waiter
        except TimeoutError:
            delivery.error = "timeout"
        finally:
            self._ack_waiters.pop(envelope_id, None)
        self._signal.fire()
        return delivery

    async def send_disconnect(self, reason: str = "warning") -> None:
        """Slack's ``disconnect`` message to every client (they reconnect on their own)."""
        message_ = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "fake-applink"},
        }
        for connection in self.open_connections:
            with contextlib.suppress(ConnectionError):
                await connection.ws.send_str(json.dumps(message_))

    async def close_sockets(self) -> None:
        """Close every Socket Mode connection from the server side."""
        for connection in self.open_connections:
            with contextlib.suppress(Exception):
                await connection.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)

    async def _next_connection(self) -> SocketConnection:
        await self._signal.wait_until(lambda: self.open_connections)
        open_ = self.open_connections
        return open_[next(self._round_robin) % len(open_)]

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        ws = web.WebSocketResponse(timeout=1.0, autoping=True)
        await ws.prepare(request)
        if len(self.open_connections) >= self.max_socket_connections:
            await ws.send_str(json.dumps({"type": "disconnect", "reason": "too_many_websockets"}))
            await ws.close()
            return ws
        connection = SocketConnection(
            id=next(self._connection_ids), ticket=ticket, ws=ws, connected_at=self.clock()
        )
        hello = {
            "type": "hello",
            "num_connections": len(self.open_connections) + 1,
            "debug_info": {
                "host": "fake-applink",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }
        await ws.send_str(json.dumps(hello))
        self.connections.append(connection)
        self._signal.fire()
        try:
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    self._on_socket_text(connection, frame.data)
        finally:
            connection.closed_at = self.clock()
            self._signal.fire()
        return ws

    def _on_socket_text(self, connection: SocketConnection, data: str) -> None:
        try:
            parsed: Any = json.loads(data)
        except ValueError:
            parsed = data
        connection.received.append(parsed)
        envelope_id = parsed.get("envelope_id") if isinstance(parsed, dict) else None
        delivery = self._unacked.pop(envelope_id, None) if isinstance(envelope_id, str) else None
        if delivery is None:
            self.stray_acks.append(parsed)
        else:
            delivery.acked_at = self.clock()
            delivery.response = parsed.get("payload")
            waiter = self._ack_waiters.get(str(envelope_id))
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._signal.fire()
