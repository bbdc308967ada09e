"""The Web API's plumbing: one request becomes a recorded ``Call``, goes through the
checks Slack makes before a method runs (unknown method, token, streaming enabled),
the injected faults and the rate limits, then to its method's handler."""

from __future__ import annotations

import asyncio
import math

from aiohttp import web

from tests.fakes.faults import Fault, retry_after_header
from tests.fakes.slack_server.limits import (
    APP_TOKEN_METHODS,
    POST_MESSAGE_WORKSPACE,
    STREAM_METHODS,
    Limit,
)
from tests.fakes.slack_server.params import JSON, SlackError, bearer, read_params
from tests.fakes.slack_server.records import Call
from tests.fakes.slack_server.state import SlackState


class WebApi(SlackState):
    """Answers ``/api/{method}``: auth, faults, rate limits, then the method."""

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, content_type = await read_params(request)
        token = bearer(request.headers.get("Authorization"))
        body_token = params.pop("token", None)
        if token is None and isinstance(body_token, str):
            token = body_token
        call = Call(
            method=method,
            params=params,
            token=token,
            time=self.clock(),
            http_method=request.method,
            content_type=content_type,
            ordinal=self.faults.arrive(method),
        )
        self.calls.append(call)
        delay = self._delays.get(method, 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        answer = self._refuse(call)
        if answer is None:
            fault = self.faults.take(method, call.ordinal, method)
            if fault is not None:
                call.injected = fault.kind
                if fault.delay > 0:
                    await asyncio.sleep(fault.delay)
                if fault.kind == "drop":
                    return self._drop(request, call)
                if fault.kind != "slow":
                    answer = _fault_answer(fault)
                    if answer[0] == 429:
                        self.rate_limited[method] += 1
        if answer is None:
            answer = self._dispatch(call)
        status, body, headers = answer
        call.status, call.response, call.headers = status, body, headers
        call.answered_at = self.clock()
        self._signal.fire()
        return web.json_response(body, status=status, headers=headers)

    def _drop(self, request: web.Request, call: Call) -> web.Response:
        """Closes the connection with no answer; aiohttp's attempt to send the returned
        response then fails quietly on the closed transport."""
        if request.transport is not None:
            request.transport.close()
        call.answered_at = self.clock()
        self._signal.fire()
        return web.Response(status=500)

    def _refuse(self, call: Call) -> tuple[int, JSON, dict[str, str]] | None:
        """What Slack answers before it looks at a call's arguments: unknown method, bad
        token, streaming not enabled. None when the call may go on."""
        method = call.method
        if method not in self._handlers:
            return 200, {"ok": False, "error": "unknown_method", "req_method": method}, {}
        if method != "api.test":
            auth_error = self._check_token(method, call.token)
            if auth_error is not None:
                return 200, {"ok": False, "error": auth_error}, {}
        if method in STREAM_METHODS and not self.native_streaming:
            return 200, {"ok": False, "error": self.streaming_error}, {}
        return None

    def _dispatch(self, call: Call) -> tuple[int, JSON, dict[str, str]]:
        """Rate limits, then the method itself."""
        method = call.method
        wait = self._rate_limit_wait(method, call.params)
        if wait is not None:
            self.rate_limited[method] += 1
            retry_after = str(max(1, math.ceil(wait)))
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": retry_after}
        try:
            result = self._handlers[method](call.params)
        except SlackError as exc:
            return exc.status, {"ok": False, "error": exc.error, **exc.extra}, {}
        return 200, {"ok": True, **result}, {}

    def _check_token(self, method: str, token: str | None) -> str | None:
        if not token:
            return "not_authed"
        if token not in self.bot_tokens and token not in self.app_tokens:
            return "invalid_auth"
        wants_app = method in APP_TOKEN_METHODS
        if wants_app != (token in self.app_tokens):
            return "not_allowed_token_type"
        return None

    def _rate_limit_wait(self, method: str, params: JSON) -> float | None:
        """None when the call may go ahead (and counts it); else seconds to wait."""
        if not self.rate_limits:
            return None
        checks: list[tuple[tuple[str, ...], Limit]] = []
        limit = self.limits.get(method)
        if method == "chat.postMessage":
            channel = str(params.get("channel", ""))
            if limit is not None:
                checks.append(((self.team_id, method, channel), limit))
            workspace = self.limits.get(POST_MESSAGE_WORKSPACE)
            if workspace is not None:
                checks.append(((self.team_id, POST_MESSAGE_WORKSPACE), workspace))
        elif limit is not None:
            checks.append(((self.team_id, method), limit))
        now = self.clock()
        wait = max((self._windows.wait(key, lim, now) for key, lim in checks), default=0.0)
        if wait > 0:
            return wait
        for key, _ in checks:
            self._windows.hit(key, now)
        return None


def _fault_answer(fault: Fault) -> tuple[int, JSON, dict[str, str]]:
    """Slack's answer for an injected fault (HTTP status, body, headers)."""
    if fault.kind == "429":
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = retry_after_header(fault.retry_after)
        return fault.status or 429, {"ok": False, "error": fault.error or "ratelimited"}, headers
    if fault.kind == "500":
        return fault.status or 500, {"ok": False, "error": fault.error or "fatal_error"}, {}
    if fault.kind == "internal_error":
        return fault.status or 200, {"ok": False, "error": fault.error or "internal_error"}, {}
    if fault.kind == "error":
        return fault.status or 200, {"ok": False, "error": fault.error or "fatal_error"}, {}
    raise ValueError(f"no answer for a {fault.kind!r} fault")
