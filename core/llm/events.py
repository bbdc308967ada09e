"""The small event vocabulary every LLM dialect is normalised to.

The engine, the CLI and the adapters only ever see these types, so a new
provider dialect is a new parser and nothing else. A stream always ends with
exactly one ``Finish`` or one ``StreamError``: the client guarantees it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning ("thinking"), kept apart from the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call; fragments with the same ``index`` belong together.

    ``id`` and ``name`` usually arrive on the first fragment only; ``arguments``
    fragments concatenate to the call's JSON arguments.
    """

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call assembled from all of its fragments."""

    index: int
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider reported them (cumulative, the latest wins)."""

    input_tokens: int
    output_tokens: int
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Finish:
    """The model finished; ``reason`` is normalised to the OpenAI vocabulary.

    One of ``stop``, ``length``, ``tool_calls``, ``content_filter``, or the
    provider's own word when it has no equivalent.
    """

    reason: str
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamError:
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
