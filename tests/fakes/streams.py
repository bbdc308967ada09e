"""Byte-exact bodies of the three streaming dialects chatrelay reads, quirks included.

Tests feed these to the real decoder (directly, or through ``FakeLLMServer``) so that
they exercise the same bytes a provider would put on the wire, not a simplified
stand-in. Every builder is deterministic: same arguments, same bytes. JSON is
compact and keeps non-ASCII characters as raw UTF-8, as the providers do, so that
cutting a body with ``split_bytes`` can land inside a multi-byte character.

:class:`StressStream` replies (see :func:`stress_streams`) stress what a bot does with
the text rather than the wire: mention-like tokens split at every position, code
fences, a line without whitespace, a reply far past every message limit. Each knows
its full ``text``, so a checker can compare the platform's final text with it.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

CREATED = 1_700_000_000
"""A fixed timestamp, so bodies compare equal between runs."""

BOM = b"\xef\xbb\xbf"
KEEPALIVE = b": keep-alive\n\n"

UsageStyle = Literal["separate", "in_finish", "litellm"]


@dataclass(frozen=True)
class Tool:
    """A tool call as the model streams it: the arguments arrive as JSON fragments."""

    name: str
    arguments: Sequence[str] = ()
    id: str = ""

    @property
    def full_arguments(self) -> str:
        return "".join(self.arguments)


def expected_text(pieces: Sequence[str]) -> str:
    return "".join(pieces)


def dumps(obj: Any) -> str:
    """The providers' JSON style: no spaces, raw UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event; ``data`` that is not a ``str`` is JSON-encoded first."""
    text = data if isinstance(data, str) else dumps(data)
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {text}\n\n".encode()


def _finish_body(parts: list[bytes], *, crlf: bool, bom: bool) -> bytes:
    body = b"".join(parts)
    if crlf:
        # JSON escapes its own newlines, so only the SSE framing changes here.
        body = body.replace(b"\n", b"\r\n")
    return (BOM if bom else b"") + body


# --------------------------------------------------------------------------- OpenAI Chat


def chat_stream(
    pieces: Sequence[str],
    *,
    reasoning: Sequence[str] = (),
    reasoning_field: str = "reasoning_content",
    refusal: Sequence[str] = (),
    model: str = "fake",
    finish: str | None = "stop",
    usage: tuple[int, int] | None = (10, 20),
    usage_style: UsageStyle = "separate",
    done: bool = True,
    tool_calls: Sequence[Tool] | None = None,
    keepalive_every: int = 0,
    error_after: int | None = None,
    error_message: str = "upstream provider error",
    crlf: bool = False,
    bom: bool = False,
    object_field: bool = True,
    double_finish: bool = False,
) -> bytes:
    """An OpenAI Chat Completions stream.

    Order: role chunk, reasoning deltas, content deltas, refusal deltas, tool-call
    fragments, finish chunk (twice with ``double_finish``, as Z.ai does), usage, ``[DONE]``.

    - ``finish=None`` leaves out the finish chunk (Gemini); with ``done=False`` too,
      that is a truncated stream.
    - ``usage_style``: ``"separate"`` is OpenAI's ``include_usage`` chunk with
      ``choices: []``; ``"in_finish"`` puts ``usage`` on the (last) finish chunk (Z.ai);
      ``"litellm"`` is a separate chunk whose ``choices`` is ``[{"index":0,"delta":{}}]``.
    - ``keepalive_every=N`` sends ``: keep-alive`` before the first chunk and after every
      N reasoning/content pieces (DeepSeek).
    - ``error_after=N`` sends ``data: {"error": {...}}`` after N content pieces, then ends
      the body there (OpenRouter's mid-stream error with HTTP 200): no finish, no ``[DONE]``.
    - ``object_field=False`` drops ``"object"`` from every chunk (Z.ai).
    """
    parts: list[bytes] = []

    def chunk(
        delta: dict[str, Any] | None,
        finish_reason: str | None = None,
        *,
        choices: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> bytes:
        body: dict[str, Any] = {"id": "chatcmpl-1"}
        if object_field:
            body["object"] = "chat.completion.chunk"
        body |= {"created": CREATED, "model": model, "system_fingerprint": None}
        if choices is not None:
            body["choices"] = choices
        elif delta is None:
            body["choices"] = []
        else:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            body["choices"] = [choice]
        return sse(body | extra)

    usage_obj = None
    if usage is not None:
        prompt, completion = usage
        usage_obj = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    if keepalive_every:
        parts.append(KEEPALIVE)
    parts.append(chunk({"role": "assistant", "content": "", "refusal": None}))

    sent = 0

    def after_piece() -> None:
        nonlocal sent
        sent += 1
        if keepalive_every and sent % keepalive_every == 0:
            parts.append(KEEPALIVE)

    for piece in reasoning:
        parts.append(chunk({"content": None, reasoning_field: piece}))
        after_piece()
    for n, piece in enumerate(pieces):
        if error_after is not None and n == error_after:
            break
        parts.append(chunk({"content": piece}))
        after_piece()
    if error_after is not None:
        error = {"message": error_message, "type": "server_error", "code": 502}
        parts.append(sse({"error": error}))
        return _finish_body(parts, crlf=crlf, bom=bom)

    for piece in refusal:
        parts.append(chunk({"refusal": piece}))
    for index, tool in enumerate(tool_calls or ()):
        first = {
            "index": index,
            "id": tool.id or f"call_{index + 1}",
            "type": "function",
            "function": {"name": tool.name, "arguments": ""},
        }
        parts.append(chunk({"tool_calls": [first]}))
        for fragment in tool.arguments:
            parts.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
            )

    if finish is not None:
        for last in [False, True] if double_finish else [True]:
            extra: dict[str, Any] = {}
            if last and usage_style == "in_finish" and usage_obj is not None:
                extra["usage"] = usage_obj
            parts.append(chunk({}, finish, **extra))
    elif usage_style == "in_finish" and usage_obj is not None:
        parts.append(chunk({}, None, usage=usage_obj))

    if usage_obj is not None and usage_style == "separate":
        parts.append(chunk(None, usage=usage_obj))
    elif usage_obj is not None and usage_style == "litellm":
        parts.append(chunk(None, choices=[{"index": 0, "delta": {}}], usage=usage_obj))

    if done:
        parts.append(b"data: [DONE]\n\n")
    return _finish_body(parts, crlf=crlf, bom=bom)


# --------------------------------------------------------------------------- Anthropic


def anthropic_stream(
    pieces: Sequence[str],
    *,
    thinking: Sequence[str] = (),
    model: str = "claude-fake",
    stop_reason: str = "end_turn",
    input_tokens: int = 10,
    output_tokens: int = 20,
    tool_use: Sequence[Tool] | None = None,
    error: str | None = None,
    error_after: int | None = None,
    error_message: str = "Overloaded",
    stop: bool = True,
    crlf: bool = False,
) -> bytes:
    """An Anthropic Messages stream with ``event:`` lines, as the API sends it.

    Blocks come in the order thinking (with a closing ``signature_delta``), text,
    tool_use. ``error="overloaded_error"`` sends an ``event: error`` after
    ``error_after`` text pieces (all of them when ``None``) and ends the body there.
    ``stop=False`` leaves out ``message_delta`` and ``message_stop`` (a truncated stream).
    """
    parts: list[bytes] = []

    def ev(event: str, **data: Any) -> None:
        parts.append(sse({"type": event, **data}, event=event))

    ev(
        "message_start",
        message={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    )
    pinged = False

    def ping() -> None:
        # Anthropic's own example sends one ping right after the first block opens.
        nonlocal pinged
        if not pinged:
            pinged = True
            ev("ping")

    index = 0
    if thinking:
        ev(
            "content_block_start",
            index=index,
            content_block={"type": "thinking", "thinking": "", "signature": ""},
        )
        ping()
        for piece in thinking:
            ev(
                "content_block_delta",
                index=index,
                delta={"type": "thinking_delta", "thinking": piece},
            )
        ev(
            "content_block_delta",
            index=index,
            delta={"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"},
        )
        ev("content_block_stop", index=index)
        index += 1

    if pieces or error is not None or not (thinking or tool_use):
        ev("content_block_start", index=index, content_block={"type": "text", "text": ""})
        ping()
        for n, piece in enumerate(pieces):
            if error is not None and error_after is not None and n == error_after:
                break
            ev("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
        if error is not None:
            ev("error", error={"type": error, "message": error_message})
            return _finish_body(parts, crlf=crlf, bom=False)
        ev("content_block_stop", index=index)
        index += 1

    for n, tool in enumerate(tool_use or ()):
        block = {"type": "tool_use", "id": tool.id or f"toolu_{n + 1}", "name": tool.name}
        ev("content_block_start", index=index, content_block={**block, "input": {}})
        ping()
        for fragment in tool.arguments:
            ev(
                "content_block_delta",
                index=index,
                delta={"type": "input_json_delta", "partial_json": fragment},
            )
        ev("content_block_stop", index=index)
        index += 1

    if stop:
        ev(
            "message_delta",
            delta={"stop_reason": stop_reason, "stop_sequence": None},
            usage={"output_tokens": output_tokens},
        )
        ev("message_stop")
    return _finish_body(parts, crlf=crlf, bom=False)


# --------------------------------------------------------------------------- OpenAI Responses


def responses_stream(
    pieces: Sequence[str],
    *,
    reasoning: Sequence[str] = (),
    model: str = "fake",
    status: Literal["completed", "incomplete", "failed"] = "completed",
    usage: tuple[int, int] | None = (10, 20),
    tool_calls: Sequence[Tool] | None = None,
    error: str | None = None,
    error_message: str = "An error occurred while processing your request.",
    terminal: bool = True,
    crlf: bool = False,
) -> bytes:
    """An OpenAI Responses stream: typed events with ``sequence_number``s, no ``[DONE]``.

    Reasoning arrives as a summary (``response.reasoning_summary_text.delta``). The last
    event is ``response.<status>``; ``incomplete`` carries ``max_output_tokens`` as the
    reason and ``failed`` a ``server_error``. ``error="..."`` sends the stand-alone
    ``error`` event after the text and ends the body there. ``terminal=False`` leaves
    the final event out (a truncated stream).
    """
    parts: list[bytes] = []
    seq = 0

    def ev(event: str, **data: Any) -> None:
        nonlocal seq
        parts.append(sse({"type": event, "sequence_number": seq, **data}, event=event))
        seq += 1

    def response(state: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": "resp_1",
            "object": "response",
            "created_at": CREATED,
            "status": state,
            "model": model,
            "output": output,
            "error": None,
            "incomplete_details": None,
            "usage": None,
        }

    ev("response.created", response=response("in_progress", []))
    ev("response.in_progress", response=response("in_progress", []))
    output: list[dict[str, Any]] = []

    if reasoning:
        oi, item_id, text = len(output), "rs_1", "".join(reasoning)
        ev(
            "response.output_item.added",
            output_index=oi,
            item={"id": item_id, "type": "reasoning", "summary": []},
        )
        where = {"item_id": item_id, "output_index": oi, "summary_index": 0}
        ev(
            "response.reasoning_summary_part.added",
            **where,
            part={"type": "summary_text", "text": ""},
        )
        for piece in reasoning:
            ev("response.reasoning_summary_text.delta", **where, delta=piece)
        ev("response.reasoning_summary_text.done", **where, text=text)
        ev(
            "response.reasoning_summary_part.done",
            **where,
            part={"type": "summary_text", "text": text},
        )
        item = {
            "id": item_id,
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": text}],
        }
        ev("response.output_item.done", output_index=oi, item=item)
        output.append(item)

    if pieces or error is not None or not (reasoning or tool_calls):
        oi, item_id, text = len(output), "msg_1", "".join(pieces)
        ev(
            "response.output_item.added",
            output_index=oi,
            item={
                "id": item_id,
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        )
        where = {"item_id": item_id, "output_index": oi, "content_index": 0}
        ev(
            "response.content_part.added",
            **where,
            part={"type": "output_text", "text": "", "annotations": []},
        )
        for piece in pieces:
            ev("response.output_text.delta", **where, delta=piece, logprobs=[])
        if error is not None:
            ev("error", code=error, message=error_message, param=None)
            return _finish_body(parts, crlf=crlf, bom=False)
        ev("response.output_text.done", **where, text=text, logprobs=[])
        content = {"type": "output_text", "text": text, "annotations": []}
        ev("response.content_part.done", **where, part=content)
        item = {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [content],
        }
        ev("response.output_item.done", output_index=oi, item=item)
        output.append(item)

    for n, tool in enumerate(tool_calls or ()):
        oi, item_id = len(output), f"fc_{n + 1}"
        item = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "call_id": tool.id or f"call_{n + 1}",
            "name": tool.name,
            "arguments": "",
        }
        ev("response.output_item.added", output_index=oi, item=item)
        for fragment in tool.arguments:
            ev(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=oi,
                delta=fragment,
            )
        ev(
            "response.function_call_arguments.done",
            item_id=item_id,
            output_index=oi,
            arguments=tool.full_arguments,
        )
        item = {**item, "status": "completed", "arguments": tool.full_arguments}
        ev("response.output_item.done", output_index=oi, item=item)
        output.append(item)

    if terminal:
        final = response(status, output)
        if usage is not None:
            final["usage"] = {
                "input_tokens": usage[0],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage[1],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage[0] + usage[1],
            }
        if status == "incomplete":
            final["incomplete_details"] = {"reason": "max_output_tokens"}
        elif status == "failed":
            final["error"] = {"code": "server_error", "message": "The model failed."}
        ev(f"response.{status}", response=final)
    return _finish_body(parts, crlf=crlf, bom=False)


# --------------------------------------------------------------------------- cutting


def split_bytes(
    data: bytes, sizes: int | Sequence[int] | None = None, *, seed: int | None = None
) -> list[bytes]:
    """Cut ``data`` the way a network might, so decoders meet every awkward boundary.

    - ``sizes=n``: pieces of ``n`` bytes (the last may be shorter); ``1`` is byte by byte.
    - ``sizes=[a, b, ...]``: pieces of those sizes in turn; what remains is the last piece.
    - ``sizes=None``: random cut points from ``random.Random(seed)`` (seed 0 by default, so
      a failure reproduces); anything from no cut to a cut after almost every byte.

    Joining the result always gives back ``data``; no piece is empty.
    """
    if isinstance(sizes, int):
        if sizes <= 0:
            raise ValueError("sizes must be positive")
        return [data[i : i + sizes] for i in range(0, len(data), sizes)]
    if sizes is not None:
        out: list[bytes] = []
        pos = 0
        for size in sizes:
            if size <= 0:
                raise ValueError("sizes must be positive")
            if pos >= len(data):
                break
            out.append(data[pos : pos + size])
            pos += size
        if pos < len(data):
            out.append(data[pos:])
        return out
    if len(data) < 2:
        return [data] if data else []
    rng = random.Random(0 if seed is None else seed)
    count = rng.randint(0, len(data) - 1)
    cuts = sorted(rng.sample(range(1, len(data)), count))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def split_events(data: bytes) -> list[bytes]:
    """One piece per SSE event (comments included), the way providers flush their streams."""
    pieces: list[bytes] = []
    start = 0
    for boundary in re.finditer(rb"\r\n\r\n|\n\n|\r\r", data):
        pieces.append(data[start : boundary.end()])
        start = boundary.end()
    if start < len(data):
        pieces.append(data[start:])
    return pieces


def two_way_splits(data: bytes) -> Iterator[list[bytes]]:
    """Every way to cut ``data`` once: exhaustive where random cuts would be luck."""
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


# --------------------------------------------------------------------------- stress replies

Dialect = Literal["chat", "anthropic", "responses"]


@dataclass(frozen=True)
class StressStream:
    """A reply the model writes in exactly these pieces, to stress what a bot does
    between the model and the platform (mention hold-back and neutralisation, fence
    balancing, splitting into messages). ``text`` is what the model wrote, so a
    checker can compare the platform's final text against it."""

    name: str
    pieces: tuple[str, ...]

    @property
    def text(self) -> str:
        """The full reply, exactly as the model wrote it."""
        return "".join(self.pieces)

    def body(self, dialect: Dialect = "chat", **options: Any) -> bytes:
        """The stream in one of the three dialects (``options`` go to the builder)."""
        if dialect == "chat":
            return chat_stream(self.pieces, **options)
        if dialect == "anthropic":
            return anthropic_stream(self.pieces, **options)
        return responses_stream(self.pieces, **options)


MENTION_SAMPLES: dict[str, tuple[str, str]] = {
    "email": ("Write to alice.smith@example.org for access.", "alice.smith@example.org"),
    "email_at_here": ("Mail ops@here.example if it breaks.", "ops@here.example"),
    "slack_user": ("Ask <@U123ABC> about the deploy.", "<@U123ABC>"),
    "slack_channel": ("<!channel> the build is red.", "<!channel>"),
    "slack_here": ("Heads up <!here>, deploying now.", "<!here>"),
    "slack_everyone": ("Hello <!everyone>!", "<!everyone>"),
    "slack_usergroup": ("Paging <!subteam^S0123ABC> now.", "<!subteam^S0123ABC>"),
    "bare_here": ("Ping @here when you are done.", "@here"),
    "bare_channel": ("Tell @channel about it.", "@channel"),
    "bare_everyone": ("Thanks @everyone", "@everyone"),
    "discord_user": ("Thanks <@123456789012345678> for that.", "<@123456789012345678>"),
    "discord_nick": ("cc <@!123456789012345678> too", "<@!123456789012345678>"),
    "discord_role": ("Paging <@&987654321098765432> now.", "<@&987654321098765432>"),
}
"""name → (a reply, the mention-like token in it). The token sits at the start
(``slack_channel``), in the middle, and at the very end (``bare_everyone``), where a
bot holding back a possible mention must still flush it when the stream ends.
``email_at_here`` contains ``@here`` without being a mention."""


def split_text(text: str, cuts: Iterable[int]) -> tuple[str, ...]:
    """``text`` cut at these character offsets (out-of-range and repeated cuts ignored);
    no piece is empty and joining them gives ``text`` back."""
    points = sorted({c for c in cuts if 0 < c < len(text)})
    bounds = [0, *points, len(text)]
    return tuple(text[a:b] for a, b in itertools.pairwise(bounds) if b > a)


def chunk_text(
    text: str, sizes: int | Sequence[int] | None = None, *, seed: int = 0, max_size: int = 12
) -> tuple[str, ...]:
    """Cut ``text`` into model-like pieces: every ``sizes`` characters, pieces of the
    listed sizes in turn (cycling), or, with ``sizes=None``, random sizes from 1 to
    ``max_size`` drawn from ``random.Random(seed)``."""
    if isinstance(sizes, int):
        sizes = [sizes]
    rng = random.Random(seed)
    cuts: list[int] = []
    pos = 0
    for n in itertools.count():
        step = sizes[n % len(sizes)] if sizes else rng.randint(1, max_size)
        if step <= 0:
            raise ValueError("sizes must be positive")
        pos += step
        if pos >= len(text):
            break
        cuts.append(pos)
    return split_text(text, cuts)


def cuts_through(name: str, text: str, token: str) -> list[StressStream]:
    """One stream per cut position from just before ``token`` to just after it (every
    way the token can straddle two pieces, and its two clean edges), then one with
    each character of the token in a piece of its own."""
    start = text.index(token)
    end = start + len(token)
    streams = [
        StressStream(f"{name}/cut{cut - start}", split_text(text, [cut]))
        for cut in range(start, end + 1)
    ]
    streams.append(StressStream(f"{name}/chars", split_text(text, range(start, end + 1))))
    return streams


def mention_stress_streams() -> list[StressStream]:
    """Every sample of :data:`MENTION_SAMPLES` split at every position of its token."""
    return [
        s
        for name, (text, token) in MENTION_SAMPLES.items()
        for s in cuts_through(name, text, token)
    ]


CODE_FENCE_TEXT = (
    "Here is the fix:\n"
    "```python\n"
    "def greet(name: str) -> str:\n"
    '    return f"hello {name}"  # `inline` ticks and a ``` in a comment\n'
    "```\n"
    "Run it with `python greet.py`, then:\n"
    "~~~bash\n"
    "echo done\n"
    "~~~\n"
    "````markdown\n"
    "```nested```\n"
    "````\n"
    "And an unclosed one to finish:\n"
    "```\n"
    "still code"
)
"""Fences of backticks and tildes, a longer fence around a shorter one, a fence-like
run inside code, inline code, and a reply that ends inside an open fence."""


def code_fence_streams() -> list[StressStream]:
    """:data:`CODE_FENCE_TEXT` cut at every position of its first opening and closing
    fences, plus whole-text random chunkings (seeds 0-4)."""
    opening = CODE_FENCE_TEXT.index("```python")
    closing = CODE_FENCE_TEXT.index("\n```\n", opening) + 1
    streams = [
        StressStream(f"fence/open{cut - opening}", split_text(CODE_FENCE_TEXT, [cut]))
        for cut in range(opening, opening + len("```python\n") + 1)
    ]
    streams += [
        StressStream(f"fence/close{cut - closing}", split_text(CODE_FENCE_TEXT, [cut]))
        for cut in range(closing, closing + len("```\n") + 1)
    ]
    streams += [
        StressStream(f"fence/seed{seed}", chunk_text(CODE_FENCE_TEXT, seed=seed, max_size=5))
        for seed in range(5)
    ]
    return streams


_NO_SPACE_ALPHABET = string.ascii_letters + string.digits + "-_.~/+=%"


def long_line_stream(length: int = 5_000, *, seed: int = 0) -> StressStream:
    """A line of ``length`` characters without any whitespace (a token, a URL-ish
    blob) between two ordinary lines, in random 1-64 character pieces: a splitter
    looking for a space or newline to cut at finds none."""
    rng = random.Random(seed)
    line = "".join(rng.choice(_NO_SPACE_ALPHABET) for _ in range(length))
    text = f"The key is:\n{line}\nKeep it safe."
    return StressStream(f"long_line/{length}", chunk_text(text, seed=seed, max_size=64))


_WORDS = (
    *("stream", "message", "reply", "token", "limit", "edit", "platform", "model"),
    *("chunk", "buffer", "the", "a", "of", "to", "and", "in", "is", "it", "for", "on"),
    *("with", "as", "café", "naïve", "façade", "über", "日本語", "テキスト", "🙂", "🚀"),
)


def large_reply_stream(size: int = 50_000, *, seed: int = 0) -> StressStream:
    """A reply of at least ``size`` UTF-8 bytes (50 KB by default): headings,
    paragraphs, lists and a fenced code block every few kilobytes, with multi-byte
    characters throughout (so characters and bytes differ), in random 1-40 character
    pieces. Far past every platform's per-message limit: the bot must split it into
    continuation messages without losing or duplicating a character."""
    rng = random.Random(seed)
    parts: list[str] = []
    total = 0
    section = 0
    while total < size:
        section += 1
        block = [f"## Section {section}\n"]
        for _ in range(rng.randint(2, 4)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(30, 90))]
            block.append(" ".join(words).capitalize() + ".\n")
        block.append("".join(f"- item {section}.{n}\n" for n in range(rng.randint(2, 5))))
        if section % 3 == 0:
            lines = "".join(f"    value_{n} = {rng.randint(0, 10**6)}\n" for n in range(8))
            block.append(f"```python\ndef section_{section}():\n{lines}```\n")
        chunk = "\n".join(block) + "\n"
        parts.append(chunk)
        total += len(chunk.encode())
    return StressStream(f"large_reply/{size}", chunk_text("".join(parts), seed=seed, max_size=40))


def stress_streams() -> list[StressStream]:
    """Every stress reply: the mention splits, the fence splits, a 5,000-character line
    without whitespace and a 50 KB reply."""
    return [
        *mention_stress_streams(),
        *code_fence_streams(),
        long_line_stream(),
        large_reply_stream(),
    ]
