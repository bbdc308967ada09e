"""The small event vocabulary every LLM dialect is normalised to.

The engine, the CLI and the adapters only ever see these types, so a new
provider dialect is a new parser and nothing else. A stream always ends with
exactly one ``Finish`` or one ``StreamError``: the client guarantees it.

They are frozen ``msgspec.Struct``s rather than frozen dataclasses: one is made
per chunk, and a frozen dataclass's ``__init__`` (``object.__setattr__`` per
field) costs four times a Struct's, three quarters of decoding the chunk's JSON.
They behave the same way (positional or keyword fields, ``==``, ``hash``,
``repr``, ``match``), except for the ``dataclasses`` helpers (use
``msgspec.structs.replace``); not being tracked by the garbage collector is
safe because they never hold a cycle.
"""

from __future__ import annotations

import msgspec


class TextDelta(msgspec.Struct, frozen=True, gc=False):
    """A piece of the answer text."""

    text: str


class ReasoningDelta(msgspec.Struct, frozen=True, gc=False):
    """A piece of the model's reasoning ("thinking"), kept apart from the answer."""

    text: str


class ToolCallDelta(msgspec.Struct, frozen=True, gc=False):
    """A fragment of a tool call; fragments with the same ``index`` belong together.

    ``id`` and ``name`` usually arrive on the first fragment only; ``arguments``
    fragments concatenate to the call's JSON arguments.
    """

    index: int
    id: str | None
    name: str | None
    arguments: str


class ToolCall(msgspec.Struct, frozen=True, gc=False):
    """A tool call assembled from all of its fragments."""

    index: int
    id: str
    name: str
    arguments: str


class Usage(msgspec.Struct, frozen=True, gc=False):
    """Token counts as the provider reported them (cumulative, the latest wins)."""

    input_tokens: int
    output_tokens: int
    reasoning_tokens: int = 0


class Finish(msgspec.Struct, frozen=True, gc=False):
    """The model finished; ``reason`` is normalised to the OpenAI vocabulary.

    One of ``stop``, ``length``, ``tool_calls``, ``content_filter``, or the
    provider's own word when it has no equivalent.
    """

    reason: str
    tool_calls: tuple[ToolCall, ...] = ()


class StreamError(msgspec.Struct, frozen=True, gc=False):
    """The stream failed. ``kind`` says how, ``message`` is short and human-readable.

    Kinds: ``provider`` (the provider reported an error), ``http`` (a non-2xx
    answer), ``connect``, ``timeout``, ``truncated`` (the stream ended without a
    finish), ``malformed`` (unparseable data), ``cancelled``.
    ``retryable`` matters only before the first token: after it, nothing is retried.
    """

    kind: str
    message: str
    retryable: bool = False
    status: int | None = None
    retry_after: float | None = None


Event = TextDelta | ReasoningDelta | ToolCallDelta | Usage | Finish | StreamError
"""Anything a normalised LLM stream yields."""

CONTENT_EVENTS = (TextDelta, ReasoningDelta, ToolCallDelta)
"""Events that count as "the first token": after one of these, no retry or fallback."""
