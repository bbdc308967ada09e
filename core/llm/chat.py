"""OpenAI Chat Completions, as OpenAI and the many "compatible" providers stream it.

"Compatible" hides many small differences (see platform-facts.md, "LLM streams"):
GLM repeats ``finish_reason`` and sends usage with it, LiteLLM's usage chunk
has a non-empty ``choices``, Gemini may never send ``finish_reason``,
OpenRouter reports errors inside a 200 stream. So the parser never ends the
stream at ``finish_reason``: it remembers the first one and ends at
``[DONE]``, which is the only point where usage is known to be final.

``feed`` runs for every chunk, so a content-only chunk (the vast majority) is
decoded by msgspec straight into the few typed fields it needs (``_TextChunk``);
any other chunk, or one the typed decode refuses, takes the general path:
``decode_object`` and dict lookups in ``_chunk``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import msgspec

from core.llm.errors import (
    SAFE_LENGTH,
    decode_object,
    fits_digit_limit,
    http_error,
    malformed,
    provider_error,
    truncated,
)
from core.llm.events import (
    Event,
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from core.llm.messages import ChatMessage
from core.llm.sse import SSEEvent

_INVALID_NAME = re.compile(r"[^A-Za-z0-9_-]")


class _ContentOnly(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    content: Annotated[str, msgspec.Meta(min_length=1)]


class _TextChoice(msgspec.Struct, gc=False):
    delta: _ContentOnly
    finish_reason: None = None


class _TextChunk(msgspec.Struct, gc=False):
    """The one shape the fast path accepts: ``choices[0].delta`` holding nothing but
    a non-empty string ``content``, no ``finish_reason``, no ``usage``, no
    ``error`` key. Unknown fields (id, model, logprobs…) are skipped unread.
    Anything else fails to decode and goes the general way."""

    choices: Annotated[list[_TextChoice], msgspec.Meta(min_length=1)]
    usage: None = None
    error: msgspec.UnsetType = msgspec.UNSET


_decode_text_chunk = msgspec.json.Decoder(_TextChunk).decode


class ChatCompletions:
    """``/chat/completions`` with ``stream: true`` and usage reporting on.

    ``extra`` is merged over the body shallowly: a user's ``stream_options``
    replaces ours entirely (dropping ``include_usage`` costs the usage report,
    nothing else).
    """

    name = "chat"
    path = "/chat/completions"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def body(
        self, model: str, messages: Sequence[ChatMessage], extra: Mapping[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [_message(m) for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        body.update(extra)
        return body

    def parser(self) -> ChatParser:
        return ChatParser()

    def error(self, status: int, body: bytes, headers: Mapping[str, str]) -> StreamError:
        return http_error(status, body, headers)


def _message(message: ChatMessage) -> dict[str, str]:
    """OpenAI rejects a ``name`` outside ``^[A-Za-z0-9_-]{1,64}$`` with a 400, and
    chat display names have spaces and accents: replace what it refuses, and
    drop a name with nothing readable left. Only user turns carry names: some
    compatible servers reject ``name`` elsewhere, and the bot needs none."""
    out = {"role": message.role, "content": message.content}
    if message.name and message.role == "user":
        name = _INVALID_NAME.sub("_", message.name)[:64]
        if name.strip("_-"):
            out["name"] = name
    return out


class ChatParser:
    """One Chat Completions stream. Only ``choices[0]`` is read: we never ask for ``n > 1``."""

    __slots__ = ("_reason", "_tools", "_usage", "done")

    def __init__(self) -> None:
        self.done = False
        """A terminal event (``Finish`` or ``StreamError``) was returned: later input
        is ignored. An attribute, not a property: the client reads it per chunk."""
        self._reason: str | None = None  # the first finish_reason seen
        self._usage: Usage | None = None
        self._tools = ToolCallBuffer()

    def feed(self, event: SSEEvent) -> list[Event]:
        data = event.data
        fast = self.feed_data(data)
        if fast is not None:
            return fast
        if not data:
            return []
        if data == "[DONE]":
            return self._complete()
        chunk = decode_object(data)
        if isinstance(chunk, StreamError):
            return [self._end(chunk)]
        # The same text-only delta in dict form: what the typed decode refused
        # (a NaN or a lone surrogate elsewhere in the chunk) but the stdlib read.
        choices = chunk.get("choices")
        if choices and type(choices) is list:
            choice = choices[0]
            if type(choice) is dict and choice.get("finish_reason") is None:
                delta = choice.get("delta")
                if type(delta) is dict and len(delta) == 1:
                    content = delta.get("content")
                    if (
                        content
                        and type(content) is str
                        and chunk.get("usage") is None
                        and "error" not in chunk
                    ):
                        return [TextDelta(content)]
        try:
            return self._chunk(chunk)
        except (AttributeError, TypeError, ValueError):
            return [self._end(malformed("a chunk of unexpected shape", data))]

    def feed_data(self, data: str | bytes) -> list[Event] | None:
        """The fast path: a text-only chunk (nearly all of them) straight to its
        ``TextDelta``, from the event's data or its raw UTF-8 bytes; ``None``
        for anything else, which ``feed`` then reads the general way."""
        if self.done:
            return []
        if len(data) > SAFE_LENGTH and not fits_digit_limit(data):
            return None
        # msgspec fills _TextChunk and skips every other field unread (still
        # checked to be valid JSON). What it accepts, json.loads reads the same
        # way (fits_digit_limit: a skipped integer too long for the stdlib) and
        # the general path turns into the same TextDelta; anything else ("[DONE]",
        # other shapes, NaN, invalid UTF-8 in a field it reads) fails here.
        try:
            content = _decode_text_chunk(data).choices[0].delta.content
        except (ValueError, RecursionError):  # msgspec.ValidationError is a ValueError
            return None
        return [TextDelta(content)]

    def end(self) -> list[Event]:
        if self.done:
            return []
        if self._reason is not None:
            return self._complete()  # a finish_reason without [DONE]: the content is whole
        return [self._end(truncated())]

    def _chunk(self, chunk: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        reason = None
        choices = chunk.get("choices")
        choice = choices[0] if choices and type(choices) is list else None
        if type(choice) is dict:
            delta = choice.get("delta")
            if delta and type(delta) is dict:
                self._delta(delta, events)  # text sent with an error is still shown
            usage = choice.get("usage")  # Moonshot reports usage inside the choice
            if usage and type(usage) is dict:
                self._usage = _usage(usage)
            reason = choice.get("finish_reason")
        error = chunk.get("error")  # OpenRouter & co: an error inside a 200 stream
        if error or reason == "error":
            events.append(self._end(provider_error(error, "the model stopped with an error")))
            return events
        if reason and self._reason is None:
            self._reason = str(reason)
        usage = chunk.get("usage")
        if usage and type(usage) is dict:
            self._usage = _usage(usage)
        return events

    def _delta(self, delta: dict[str, Any], events: list[Event]) -> None:
        # Some servers fill both reasoning fields with the same text: use one.
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and type(reasoning) is str:
            events.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if content and type(content) is str:
            events.append(TextDelta(content))
        refusal = delta.get("refusal")
        if refusal and type(refusal) is str:
            events.append(TextDelta(refusal))  # the user must see why there is no answer
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            for fragment in tool_calls:
                events.append(self._tool_fragment(fragment))

    def _tool_fragment(self, fragment: dict[str, Any]) -> ToolCallDelta:
        function = fragment.get("function") or {}
        call_id = fragment.get("id") or None
        index = fragment.get("index")
        if type(index) is not int:
            index = self._tools.index_for(call_id)  # some servers leave out the index
        arguments = function.get("arguments")
        if arguments is None:
            arguments = ""
        elif type(arguments) is not str:
            arguments = json.dumps(arguments)  # a few servers send the arguments as an object
        return self._tools.add(index, call_id, function.get("name") or None, arguments)

    def _complete(self) -> list[Event]:
        reason = self._reason or ("tool_calls" if self._tools else "stop")
        finish = self._end(Finish(reason, self._tools.calls()))
        return [self._usage, finish] if self._usage else [finish]

    def _end(self, event: Event) -> Event:
        self.done = True
        return event


class ToolCallBuffer:
    """Tool-call fragments by index, so the ``Finish`` carries whole calls.
    Shared by every dialect: they all stream calls as (index, id, name, json pieces)."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, _Call] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def __contains__(self, index: int) -> bool:
        return index in self._calls

    def add(
        self, index: int, call_id: str | None, name: str | None, arguments: str
    ) -> ToolCallDelta:
        """Records one fragment. The first id and name win: some servers repeat
        them on every fragment, none split them."""
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _Call()
        if call_id and not call.id:
            call.id = call_id
        if name and not call.name:
            call.name = name
        if arguments:
            call.parts.append(arguments)
        return ToolCallDelta(index, call_id, name, arguments)

    def arguments(self, index: int) -> str:
        call = self._calls.get(index)
        return "".join(call.parts) if call else ""

    def index_for(self, call_id: str | None) -> int:
        """An index for a fragment that has none: a new id starts a new call,
        anything else continues the last one."""
        if not self._calls:
            return 0
        last = max(self._calls)
        if call_id and all(call.id != call_id for call in self._calls.values()):
            return last + 1
        return last

    def calls(self) -> tuple[ToolCall, ...]:
        """Sorted by index. A call without arguments gets ``{}``: "" is not JSON,
        and a tool without parameters is still called with an empty object."""
        return tuple(
            ToolCall(index, call.id, call.name, "".join(call.parts) or "{}")
            for index, call in sorted(self._calls.items())
        )


class _Call:
    __slots__ = ("id", "name", "parts")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.parts: list[str] = []


def _usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if type(details) is dict else None
    return Usage(
        _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), _int(reasoning)
    )


def _int(value: Any) -> int:
    return value if type(value) is int else 0
