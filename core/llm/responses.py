"""OpenAI Responses, streamed: typed ``response.*`` events, no ``[DONE]``.

The stream ends with ``response.completed``, ``response.incomplete`` or
``response.failed``; anything else ending the bytes is a truncation. Tool calls
are output items, keyed by ``output_index``, which serves as the call's index.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from core.llm.anthropic import named_text
from core.llm.chat import ToolCallBuffer
from core.llm.errors import decode_object, http_error, malformed, provider_error, truncated
from core.llm.events import Event, Finish, ReasoningDelta, StreamError, TextDelta, Usage
from core.llm.messages import ChatMessage
from core.sse import SSEEvent

_loads = json.loads

INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}

_TEXT = ("response.output_text.delta", "response.refusal.delta")
_REASONING = ("response.reasoning_summary_text.delta", "response.reasoning_text.delta")


class OpenAIResponses:
    """``/responses`` with ``stream: true``. System messages become
    ``instructions`` (joined with a blank line); the input has no ``name``
    field, so a user's name prefixes the text. ``extra`` is merged shallowly."""

    name = "responses"
    path = "/responses"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def body(
        self, model: str, messages: Sequence[ChatMessage], extra: Mapping[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model}
        instructions = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
        if instructions:
            body["instructions"] = instructions
        body["input"] = [
            {"role": m.role, "content": named_text(m)} for m in messages if m.role != "system"
        ]
        body["stream"] = True
        body.update(extra)
        return body

    def parser(self) -> ResponsesParser:
        return ResponsesParser()

    def error(self, status: int, body: bytes, headers: Mapping[str, str]) -> StreamError:
        return http_error(status, body, headers)


class ResponsesParser:
    """One Responses stream. Events it does not know (``response.created``,
    ``*.done``, web-search progress…) are ignored, so new ones cost nothing."""

    __slots__ = ("_done", "_tools")

    def __init__(self) -> None:
        self._done = False
        self._tools = ToolCallBuffer()

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: SSEEvent) -> list[Event]:
        data = event.data
        if self._done or not data:
            return []
        payload = decode_object(data)
        if isinstance(payload, StreamError):
            return [self._end(payload)]
        kind = payload.get("type") or event.event
        if kind in _TEXT:
            delta = payload.get("delta")
            return [TextDelta(delta)] if delta and type(delta) is str else []
        if kind in _REASONING:
            delta = payload.get("delta")
            return [ReasoningDelta(delta)] if delta and type(delta) is str else []
        try:
            return self._other(kind, payload)
        except (AttributeError, TypeError, ValueError):
            return [self._end(malformed("an event of unexpected shape", data))]

    def end(self) -> list[Event]:
        if self._done:
            return []
        return [self._end(truncated())]

    def _other(self, kind: str, payload: dict[str, Any]) -> list[Event]:
        if kind == "response.function_call_arguments.delta":
            index = payload.get("output_index")
            delta = payload.get("delta")
            if delta and type(index) is int and index in self._tools:
                return [self._tools.add(index, None, None, delta)]
        elif kind == "response.output_item.added":
            item = payload["item"]
            index = payload.get("output_index")
            if item.get("type") == "function_call" and type(index) is int:
                arguments = item.get("arguments") or ""
                return [self._tools.add(index, item.get("call_id"), item.get("name"), arguments)]
        elif kind == "response.function_call_arguments.done":
            # Servers that skip the deltas still send the whole arguments here.
            index = payload.get("output_index")
            arguments = payload.get("arguments")
            if (
                arguments
                and type(index) is int
                and index in self._tools
                and not self._tools.arguments(index)
            ):
                return [self._tools.add(index, None, None, arguments)]
        elif kind == "response.reasoning_summary_part.added":
            if _int(payload.get("summary_index")) > 0:
                return [ReasoningDelta("\n\n")]  # summary parts are paragraphs
        elif kind == "response.completed":
            return self._finish(payload["response"], "tool_calls" if self._tools else "stop")
        elif kind == "response.incomplete":
            response = payload["response"]
            reason = (response.get("incomplete_details") or {}).get("reason") or "incomplete"
            return self._finish(response, INCOMPLETE_REASONS.get(reason, reason))
        elif kind == "response.failed":
            error = (payload.get("response") or {}).get("error")
            return [self._end(provider_error(error, "the model failed to answer"))]
        elif kind == "error":
            return [self._end(provider_error(payload, "the provider reported an error"))]
        return []

    def _finish(self, response: dict[str, Any], reason: str) -> list[Event]:
        finish = self._end(Finish(reason, self._tools.calls()))
        usage = response.get("usage")
        if type(usage) is not dict:
            return [finish]
        details = usage.get("output_tokens_details")
        reasoning = details.get("reasoning_tokens") if type(details) is dict else None
        counts = Usage(
            _int(usage.get("input_tokens")), _int(usage.get("output_tokens")), _int(reasoning)
        )
        return [counts, finish]

    def _end(self, event: Event) -> Event:
        self._done = True
        return event


def _int(value: Any) -> int:
    return value if type(value) is int else 0
