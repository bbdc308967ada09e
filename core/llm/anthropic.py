"""Anthropic Messages, streamed: typed events around indexed content blocks.

Unlike Chat Completions, the stream names each event and brackets each content
block, so the parser is a dispatch on ``type`` (read from the JSON, which is
authoritative, falling back to the SSE ``event`` name). ``content_block_delta``
is the hot event: text and thinking deltas are decoded by msgspec straight into
the few typed fields they need (``feed_data``), and handled first otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

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

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires ``max_tokens``; ``extra`` may set another."""

OPENING = "(continuing an earlier conversation)"
"""The user turn put before a history that starts with the assistant: the API
wants a user turn first, and dropping the assistant's words would lose context."""

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class _TextOrThinking(msgspec.Struct, gc=False):
    type: Literal["text_delta", "thinking_delta"]
    text: str = ""
    thinking: str = ""


class _BlockDelta(msgspec.Struct, gc=False):
    """The shape ``feed_data`` accepts: a ``content_block_delta`` whose delta is text
    or thinking. Other fields (``index``, and whatever is added later) are skipped
    unread; anything else fails to decode and goes the general way."""

    type: Literal["content_block_delta"]
    delta: _TextOrThinking


_decode_block_delta = msgspec.json.Decoder(_BlockDelta).decode


class AnthropicMessages:
    """``/messages`` with ``stream: true``. ``extra`` is merged over the body
    shallowly, so it can replace ``max_tokens``, ``system`` or add ``thinking``."""

    name = "anthropic"
    path = "/messages"

    def headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def body(
        self, model: str, messages: Sequence[ChatMessage], extra: Mapping[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "max_tokens": DEFAULT_MAX_TOKENS}
        system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
        if system:
            body["system"] = system
        body["messages"] = alternate(messages)
        body["stream"] = True
        body.update(extra)
        return body

    def parser(self) -> AnthropicParser:
        return AnthropicParser()

    def error(self, status: int, body: bytes, headers: Mapping[str, str]) -> StreamError:
        return http_error(status, body, headers)


def named_text(message: ChatMessage) -> str:
    """APIs without a ``name`` field still need to tell the people of a thread apart."""
    if message.name and message.role == "user":
        return f"{message.name}: {message.content}"
    return message.content


def alternate(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """User and assistant turns as Anthropic accepts them.

    System messages go to ``system``; blank turns are dropped (the API rejects
    empty text); consecutive turns of one role are joined with a blank line, so
    several people writing in a row become one user turn, each line still
    prefixed with its author; a history that starts with the assistant gets an
    ``OPENING`` user turn; a final assistant turn (a prefill) loses its
    trailing whitespace, which the API rejects there.
    """
    turns: list[dict[str, str]] = []
    for message in messages:
        if message.role == "system" or not message.content.strip():
            continue
        text = named_text(message)
        if turns and turns[-1]["role"] == message.role:
            turns[-1]["content"] += "\n\n" + text
        else:
            turns.append({"role": message.role, "content": text})
    if turns and turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": OPENING})
    if turns and turns[-1]["role"] == "assistant":
        turns[-1]["content"] = turns[-1]["content"].rstrip()
    return turns


class AnthropicParser:
    """One Messages stream.

    It ends at ``message_stop``. If the bytes stop after a ``message_delta``
    carrying ``stop_reason``, the content is complete (only the closing event
    is missing), so ``end`` finishes normally; before that, it is truncated.
    Input tokens include cache reads and writes, as OpenAI's ``prompt_tokens`` do.
    """

    __slots__ = ("_input", "_output", "_stop_reason", "_tools", "done")

    def __init__(self) -> None:
        self.done = False
        """A terminal event (``Finish`` or ``StreamError``) was returned: later input
        is ignored. An attribute, not a property: the client reads it per chunk."""
        self._stop_reason: str | None = None
        self._input: int | None = None
        self._output: int | None = None
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
        try:
            if kind == "content_block_delta":
                return self._delta(payload)
            return self._other(kind, payload)
        except (AttributeError, TypeError, ValueError):
            return [self._end(malformed("an event of unexpected shape", data))]

    def feed_data(self, data: str | bytes) -> list[Event] | None:
        """The fast path: a text or thinking delta straight to its event, from the
        event's data or its raw UTF-8 bytes; ``None`` for anything else, which
        ``feed`` then reads the general way."""
        if self.done:
            return []
        if len(data) > SAFE_LENGTH and not fits_digit_limit(data):
            return None
        # msgspec fills _BlockDelta and skips the other fields unread (still checked
        # to be valid JSON). What it accepts, json.loads reads the same way
        # (fits_digit_limit: a skipped integer too long for the stdlib) and _delta
        # turns into the same event; anything else fails here.
        try:
            delta = _decode_block_delta(data).delta
        except (ValueError, RecursionError):  # msgspec.ValidationError is a ValueError
            return None
        if delta.type == "text_delta":
            if delta.text:
                return [TextDelta(delta.text)]
        elif delta.thinking:
            return [ReasoningDelta(delta.thinking)]
        return None

    def end(self) -> list[Event]:
        if self.done:
            return []
        if self._stop_reason is not None:
            return self._complete()
        return [self._end(truncated())]

    def _delta(self, payload: dict[str, Any]) -> list[Event]:
        delta = payload["delta"]
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return [TextDelta(text)] if text else []
        if kind == "thinking_delta":
            thinking = delta.get("thinking")
            return [ReasoningDelta(thinking)] if thinking else []
        if kind == "input_json_delta":
            index = payload.get("index")
            partial = delta.get("partial_json")
            # A block we did not start is a server tool (web search): not ours to run.
            if partial and type(index) is int and index in self._tools:
                return [self._tools.add(index, None, None, partial)]
        return []  # signature_delta, citations_delta: nothing to show

    def _other(self, kind: str, payload: dict[str, Any]) -> list[Event]:
        if kind == "content_block_start":
            return self._block_start(payload.get("index"), payload["content_block"])
        if kind == "message_start":
            self._count(payload["message"].get("usage"))
        elif kind == "message_delta":
            reason = (payload.get("delta") or {}).get("stop_reason")
            if reason:
                self._stop_reason = reason
            self._count(payload.get("usage"))
        elif kind == "message_stop":
            return self._complete()
        elif kind == "error":
            error = provider_error(payload.get("error"), "the provider reported an error")
            return [self._end(error)]
        return []  # ping, content_block_stop, and event types newer than this code

    def _block_start(self, index: Any, block: dict[str, Any]) -> list[Event]:
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            return [TextDelta(text)] if text else []
        if kind == "thinking":
            thinking = block.get("thinking")
            return [ReasoningDelta(thinking)] if thinking else []
        if kind == "tool_use" and type(index) is int:
            return [self._tools.add(index, block.get("id") or None, block.get("name") or None, "")]
        return []

    def _count(self, usage: Any) -> None:
        """Usage is cumulative: the latest numbers replace the earlier ones."""
        if type(usage) is not dict:
            return
        if usage.get("input_tokens") is not None:
            self._input = (
                _int(usage.get("input_tokens"))
                + _int(usage.get("cache_creation_input_tokens"))
                + _int(usage.get("cache_read_input_tokens"))
            )
        if usage.get("output_tokens") is not None:
            self._output = _int(usage.get("output_tokens"))

    def _complete(self) -> list[Event]:
        raw = self._stop_reason or "end_turn"
        finish = self._end(Finish(STOP_REASONS.get(raw, raw), self._tools.calls()))
        if self._input is None and self._output is None:
            return [finish]
        return [Usage(self._input or 0, self._output or 0), finish]

    def _end(self, event: Event) -> Event:
        self.done = True
        return event


def _int(value: Any) -> int:
    return value if type(value) is int else 0
