"""OpenAI Responses, streamed: typed ``response.*`` events, no ``[DONE]``.

The stream ends with ``response.completed``, ``response.incomplete`` or
``response.failed``; anything else ending the bytes is a truncation. Tool calls
are output items, keyed by ``output_index``, which serves as the call's index.
Text and reasoning deltas, the hot events, are decoded by msgspec straight into
the two typed fields they need (``feed_data``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec

from core.llm.anthropic import named_text
from core.llm.chat import ToolCallBuffer
from core.llm.errors import (
    SAFE_LENGTH,
    decode_object,
    fits_digit_limit,
    http_error,
    malformed,
    provider_error,
    truncated,
)
from core.llm.events import Event, Finish, ReasoningDelta, StreamError, TextDelta, Usage
from core.llm.messages import ChatMessage
from core.llm.sse import SSEEvent

INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}

_TEXT = ("response.output_text.delta", "response.refusal.delta")
_REASONING = ("response.reasoning_summary_text.delta", "response.reasoning_text.delta")


class _Delta(msgspec.Struct, gc=False):
    """The shape ``feed_data`` accepts: a text, refusal or reasoning delta with a
    non-empty string ``delta``. Other fields (``item_id``, ``output_index``, ``logprobs``…)
    are skipped unread; anything else fails to decode and goes the general way."""

    type: Literal[
        "response.output_text.delta",
        "response.refusal.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
    ]
    delta: Annotated[str, msgspec.Meta(min_length=1)]


_decode_delta = msgspec.json.Decoder(_Delta).decode


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

    __slots__ = ("_tools", "done")

    def __init__(self) -> None:
        self.done = False
        """A terminal event (``Finish`` or ``StreamError``) was returned: later input
        is ignored. An attribute, not a property: the client reads it per chunk."""
        self._tools = ToolCallBuffer()

    def feed(self, event: SSEEvent) -> list[Event]:
        data = event.data
        fast = self.feed_data(data)
        if fast is not None:
            return fast
        if not data:
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

    def feed_data(self, data: str | bytes) -> list[Event] | None:
        """The fast path: a text or reasoning delta straight to its event, from the
        event's data or its raw UTF-8 bytes; ``None`` for anything else, which
        ``feed`` then reads the general way."""
        if self.done:
            return []
        if len(data) > SAFE_LENGTH and not fits_digit_limit(data):
            return None
        # msgspec fills _Delta and skips the other fields unread (still checked to
        # be valid JSON). What it accepts, json.loads reads the same way
        # (fits_digit_limit: a skipped integer too long for the stdlib) and feed
        # turns into the same event; anything else fails here.
        try:
            payload = _decode_delta(data)
        except (ValueError, RecursionError):  # msgspec.ValidationError is a ValueError
            return None
        if payload.type in _TEXT:
            return [TextDelta(payload.delta)]
        return [ReasoningDelta(payload.delta)]

    def end(self) -> list[Event]:
        if self.done:
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
        self.done = True
        return event


def _int(value: Any) -> int:
    return value if type(value) is int else 0
