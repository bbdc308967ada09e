"""The REST plumbing: one request becomes a recorded ``CallRecord``, goes through
the Cloudflare ban, route matching, the bot token, injected faults and the rate
limits, then to its route's handler; the answer goes out as Discord's JSON."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.discord_server.buckets import RateLimiting
from tests.fakes.discord_server.constants import Json
from tests.fakes.discord_server.limits import bucket_hash
from tests.fakes.discord_server.records import CallRecord
from tests.fakes.discord_server.routing import Dropped, Request, Route
from tests.fakes.discord_server.validation import ApiError
from tests.fakes.faults import Fault, retry_after_header


class RestApi(RateLimiting):
    """Answers ``/api/v{version}/...``: auth, faults, rate limits, then the route."""

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        tail = request.match_info["tail"].strip("/")
        body, files = await self._read_body(request)
        call = CallRecord(request.method, tail, dict(request.query), body, now)
        self.calls.append(call)
        try:
            status, payload, headers = await self._process(request, call, files)
        except Dropped:
            # No answer at all: aiohttp's attempt to send the returned response fails
            # quietly on the closed transport.
            if request.transport is not None:
                request.transport.close()
            async with self._changed:
                self._changed.notify_all()
            return web.Response(status=500)
        except Exception as exc:  # a bug in the fake: answer 500 and keep the evidence
            status, payload, headers = 500, {"message": f"fake bug: {exc!r}", "code": 0}, {}
        call.status, call.response, call.headers = status, payload, headers
        async with self._changed:
            self._changed.notify_all()
        if isinstance(payload, str):
            return web.Response(status=status, text=payload, headers=headers)
        if payload is None:
            return web.Response(status=status, headers=headers)
        raw = json.dumps(payload).encode()
        return web.Response(
            status=status, body=raw, headers={**headers, "Content-Type": "application/json"}
        )

    async def _read_body(self, request: web.Request) -> tuple[Any, list[Json]]:
        if not request.can_read_body:
            return None, []
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            payload: Any = None
            files: list[Json] = []
            for name, value in form.items():
                if name == "payload_json":
                    payload = json.loads(str(value))
                elif isinstance(value, web.FileField):
                    size = len(value.file.read())
                    files.append(
                        {
                            "field": name,
                            "filename": value.filename,
                            "size": size,
                            "content_type": value.content_type,
                        }
                    )
            return payload, files
        raw = await request.read()
        if not raw:
            return None, []
        try:
            return json.loads(raw), []
        except ValueError:
            return raw.decode(errors="replace"), []

    async def _process(
        self, request: web.Request, call: CallRecord, files: list[Json]
    ) -> tuple[int, Any, dict[str, str]]:
        via = {"Via": "1.1 google"}
        if self.cloudflare_banned:
            return 429, "error code: 1015", {"Retry-After": "600"}
        route, params = self._match(request.method, call.path)
        if route is None:
            return 404, {"message": "404: Not Found", "code": 0}, via
        call.route = route.template
        call.ordinal = self.faults.arrive(call.key)
        if route.auth and request.headers.get("Authorization") != f"Bot {self.bot_token}":
            return 401, {"message": "401: Unauthorized", "code": 0}, via
        fault = self.faults.take(call.key, call.ordinal, call.path)
        if fault is not None:
            call.injected = fault.kind
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.kind == "drop":
                raise Dropped
            if fault.kind != "slow":
                return self._fault_answer(fault, route, params)
        limited, headers = self._rate_limit(route, params, call)
        headers = {**via, **headers}
        if limited is not None:
            return 429, limited, headers
        req = Request(params, call.json, call.query, files, call.time, call.path)
        try:
            status, payload = await route.handler(req)
        except ApiError as err:
            status, payload = err.status, err.body
        return status, payload, headers

    def _fault_answer(
        self, fault: Fault, route: Route, params: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        """Discord's answer for an injected fault. A 429 looks like one of the route's
        bucket (all the ``X-RateLimit-*`` headers, ``Via``, the JSON body), without
        touching the fake's own windows."""
        via = {"Via": "1.1 google"}
        if fault.kind == "429":
            _, limit, hash_name = self._bucket_for(route, params)
            retry = fault.retry_after
            if retry is None:
                retry = float((fault.body or {}).get("retry_after", 1.0))
            headers = {
                **via,
                "X-RateLimit-Limit": str(limit.limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry:.3f}",
                "X-RateLimit-Reset-After": f"{retry:.3f}",
                "X-RateLimit-Bucket": bucket_hash(hash_name),
                "X-RateLimit-Scope": limit.scope,
                "Retry-After": retry_after_header(retry),
            }
            body = fault.body or {
                "message": "You are being rate limited.",
                "retry_after": retry,
                "global": False,
            }
            return fault.status or 429, body, headers
        if fault.kind in ("500", "error"):
            body = fault.body or {"message": "500: Internal Server Error", "code": 0}
            return fault.status or 500, body, via
        raise ValueError(f"no answer for a {fault.kind!r} fault")

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        for route in self._routes:
            if route.method != method:
                continue
            found = route.pattern.match(path)
            if found:
                return route, found.groupdict()
        return None, {}
