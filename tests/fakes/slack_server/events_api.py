"""Events API delivery over HTTP: signed requests to the app (Slack's ``v0``
signature), Slack's retries when the app doesn't answer 2xx within 3 s,
interactions as form posts, and the ``url_verification`` check."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from urllib.parse import urlencode

import aiohttp

from tests.fakes.slack_server.events import Envelopes
from tests.fakes.slack_server.params import JSON
from tests.fakes.slack_server.records import Delivery


def sign(signing_secret: str, timestamp: int | str, body: bytes | str) -> str:
    """``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}``, as Slack signs requests."""
    raw = body.encode() if isinstance(body, str) else body
    base = f"v0:{timestamp}:".encode() + raw
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def signature_headers(
    signing_secret: str, body: bytes | str, timestamp: int | None = None
) -> dict[str, str]:
    """The two headers a signed Slack request carries (wall-clock timestamp by default)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": sign(signing_secret, ts, body),
    }


class EventsApi(Envelopes):
    """Delivers events and interactions to an app's HTTP endpoint."""

    async def deliver_http(
        self,
        url: str,
        event: JSON,
        *,
        signing_secret: str,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        event_id: str | None = None,
        timeout: float = 3.0,  # noqa: ASYNC109
        timestamp: int | None = None,
    ) -> int:
        """POST ``event`` in an ``event_callback`` envelope, signed, to the app.

        Returns the HTTP status; the attempt (with its latency) lands in
        ``deliveries``. Raises TimeoutError when no answer comes within ``timeout``
        (Slack's 3 s) and aiohttp's error when the app can't be reached."""
        envelope = self.event_envelope(event, event_id=event_id)
        delivery = await self._post_signed(
            url,
            json.dumps(envelope).encode(),
            "application/json",
            signing_secret=signing_secret,
            kind="events_api",
            payload=envelope,
            attempt=retry_num or 0,
            retry_reason=retry_reason,
            timeout=timeout,
            timestamp=timestamp,
        )
        return _raise_or_status(delivery)

    async def deliver_http_with_retries(
        self,
        url: str,
        event: JSON,
        *,
        signing_secret: str,
        ack_timeout: float = 3.0,
        retry_delays: tuple[float, ...] | None = None,
        event_id: str | None = None,
    ) -> list[Delivery]:
        """Deliver like Slack: when the app doesn't answer 2xx within ``ack_timeout``,
        retry (same ``event_id``) after each of ``retry_delays`` with
        ``X-Slack-Retry-Num``/``X-Slack-Retry-Reason`` — unless the app answered with
        ``X-Slack-No-Retry: 1``. Returns every attempt."""
        envelope = self.event_envelope(event, event_id=event_id)
        body = json.dumps(envelope).encode()
        delays = self.retry_delays if retry_delays is None else retry_delays
        attempts: list[Delivery] = []
        reason: str | None = None
        for attempt in range(len(delays) + 1):
            if attempt:
                await asyncio.sleep(delays[attempt - 1])
            delivery = await self._post_signed(
                url,
                body,
                "application/json",
                signing_secret=signing_secret,
                kind="events_api",
                payload=envelope,
                attempt=attempt,
                retry_reason=reason,
                timeout=ack_timeout,
            )
            attempts.append(delivery)
            if delivery.acked or delivery.response_headers.get("x-slack-no-retry") == "1":
                break
            reason = {"timeout": "http_timeout", "connection_failed": "connection_failed"}.get(
                delivery.error or "", "http_error"
            )
        return attempts

    async def deliver_http_interaction(
        self,
        url: str,
        payload: JSON,
        *,
        signing_secret: str,
        timeout: float = 3.0,  # noqa: ASYNC109
    ) -> int:
        """POST an interaction (``block_actions``…) as Slack does: form field ``payload``."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        delivery = await self._post_signed(
            url,
            body,
            "application/x-www-form-urlencoded",
            signing_secret=signing_secret,
            kind="interactive",
            payload=payload,
            attempt=0,
            retry_reason=None,
            timeout=timeout,
        )
        return _raise_or_status(delivery)

    async def url_verification(
        self,
        url: str,
        signing_secret: str,
        timeout: float = 3.0,  # noqa: ASYNC109
    ) -> bool:
        """Slack's endpoint check: True when the app echoes the challenge."""
        challenge = uuid.uuid4().hex
        payload = {
            "token": self.verification_token,
            "challenge": challenge,
            "type": "url_verification",
        }
        delivery = await self._post_signed(
            url,
            json.dumps(payload).encode(),
            "application/json",
            signing_secret=signing_secret,
            kind="url_verification",
            payload=payload,
            attempt=0,
            retry_reason=None,
            timeout=timeout,
        )
        if delivery.status != 200:
            return False
        answer = delivery.response
        if isinstance(answer, dict):
            return answer.get("challenge") == challenge
        return str(answer).strip() == challenge

    async def _post_signed(
        self,
        url: str,
        body: bytes,
        content_type: str,
        *,
        signing_secret: str,
        kind: str,
        payload: JSON,
        attempt: int,
        retry_reason: str | None,
        timeout: float,  # noqa: ASYNC109
        timestamp: int | None = None,
    ) -> Delivery:
        if self._session is None:
            raise RuntimeError("fake Slack not started")
        headers = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            **signature_headers(signing_secret, body, timestamp),
        }
        if attempt:
            headers["X-Slack-Retry-Num"] = str(attempt)
            headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
        event_id = payload.get("event_id") if kind == "events_api" else None
        delivery = Delivery(
            transport="http",
            kind=kind,
            payload=payload,
            event_id=event_id,
            attempt=attempt,
            retry_reason=retry_reason if attempt else None,
            sent_at=self.clock(),
        )
        self.deliveries.append(delivery)
        try:
            async with (
                asyncio.timeout(timeout),
                self._session.post(url, data=body, headers=headers) as response,
            ):
                text = await response.text()
                delivery.acked_at = self.clock()
                delivery.status = response.status
                delivery.response_headers = {k.lower(): v for k, v in response.headers.items()}
                try:
                    delivery.response = json.loads(text) if text else None
                except ValueError:
                    delivery.response = text
                if response.status >= 300:
                    delivery.error = "http_error"
        except TimeoutError:
            delivery.error = "timeout"
        except aiohttp.ClientError as exc:
            delivery.error = "connection_failed"
            delivery.response = exc
        self._signal.fire()
        return delivery


def _raise_or_status(delivery: Delivery) -> int:
    if delivery.error == "timeout":
        raise TimeoutError(f"no answer to {delivery.kind} within the deadline")
    if delivery.error == "connection_failed" and isinstance(delivery.response, BaseException):
        raise delivery.response
    assert delivery.status is not None
    return delivery.status
