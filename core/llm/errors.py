"""What every dialect needs to turn a provider failure into a ``StreamError``.

Providers disagree on error shapes (OpenAI, Anthropic, FastAPI-style gateways,
Gemini's list-wrapped errors, HTML pages from a proxy), but the user should
always see one short line saying what went wrong, and the client needs to know
whether trying again can help. Only ``decode_object`` is on the per-chunk hot
path (see its note on msgspec).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import msgspec

from core.llm.events import StreamError

MAX_MESSAGE = 200
"""Error text longer than this is cut: it ends up in a chat message."""

_RETRYABLE_CODES = (
    "overload",
    "rate_limit",
    "resource_exhausted",
    "server_error",
    "api_error",
    "internal",
    "unavailable",
    "timeout",
)
"""Fragments of provider error codes/types that mean "try again later"."""

_NOT_RETRYABLE_CODES = ("insufficient_quota", "billing")
"""A 429 that means "pay first": retrying only burns the user's time."""

_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"\s+")


def is_retryable_status(status: int) -> bool:
    """Statuses where the same request may succeed later.

    Like the OpenAI and Anthropic SDKs: timeouts (408), lock conflicts (409),
    too-early (425), rate limits (429) and server errors, including Anthropic's
    529 "overloaded". 501 and 505 say the server will never handle this request.
    """
    if status in (408, 409, 425, 429):
        return True
    return 500 <= status <= 599 and status not in (501, 505)


def is_retryable_code(code: object) -> bool:
    """Whether an error code from a body or mid-stream error is worth a retry.

    Providers use HTTP-like numbers (OpenRouter ``502``, Gemini ``429``) or
    words (``overloaded_error``, ``rate_limit_exceeded``, ``server_error``).
    """
    if isinstance(code, int) and not isinstance(code, bool):
        return is_retryable_status(code)
    if not isinstance(code, str) or not code:
        return False
    if code.isdigit():
        return is_retryable_status(int(code))
    lowered = code.lower()
    if any(word in lowered for word in _NOT_RETRYABLE_CODES):
        return False
    return any(word in lowered for word in _RETRYABLE_CODES)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """How long the provider asks us to wait, or None if it did not say (or said nonsense).

    ``retry-after-ms`` (OpenAI, Azure) is more precise, so it wins. ``Retry-After``
    is delta-seconds or an HTTP-date; a date in the past means "now" (0.0).
    ``now`` is for tests.
    """
    millis = _number(_header(headers, "retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = _header(headers, "retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def error_message(body: bytes) -> str:
    """The provider's own explanation from an error body, at most ``MAX_MESSAGE`` chars."""
    return _parse_error(body)[0]


def http_error(status: int, body: bytes, headers: Mapping[str, str]) -> StreamError:
    """The ``Dialect.error`` every dialect shares: the error shapes overlap too
    much to be told apart by dialect, and a gateway in front of any of them may
    answer in its own format anyway."""
    message, code = _parse_error(body)
    if not message:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = "no details"
    retryable = is_retryable_status(status)
    if retryable and code and any(word in code.lower() for word in _NOT_RETRYABLE_CODES):
        retryable = False
    should_retry = (_header(headers, "x-should-retry") or "").lower()
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"  # the SDKs honour this server hint too
    return StreamError(
        "http",
        f"HTTP {status}: {message}",
        retryable=retryable,
        status=status,
        retry_after=retry_after_seconds(headers),
    )


def provider_error(error: Any, fallback: str) -> StreamError:
    """A ``StreamError(kind="provider")`` from an in-stream error object such as
    ``{"code": 502, "message": "..."}`` or ``{"type": "overloaded_error", ...}``."""
    message, code = _from_json(error)
    return StreamError(
        "provider", shorten(message) or fallback, retryable=bool(code) and is_retryable_code(code)
    )


_decode_json = msgspec.json.Decoder().decode


def decode_object(data: str) -> dict[str, Any] | StreamError:
    """One SSE event's JSON object, or the ``malformed`` error that ends the stream.
    Every dialect's data is a JSON object; anything else means a broken stream.

    msgspec decodes it (about 4× faster than ``json.loads``, which alone used to
    be most of a chunk's cost). Whatever msgspec accepts it decodes to the same
    value as the stdlib (duplicate keys: the last wins; integers of any size up
    to the interpreter's digit limit); what it refuses and the stdlib takes
    (``NaN``, ``Infinity``, ``1e400`` as inf, escaped lone surrogates) goes to
    ``json.loads``, which also decides every error, so no input reads
    differently than it did with the stdlib alone.
    """
    try:
        payload = _decode_json(data)
    except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError
        try:
            payload = json.loads(data)
        except ValueError:
            return malformed("unparseable JSON", data)
    if type(payload) is not dict:
        return malformed("JSON that is not an object", data)
    return payload


SAFE_LENGTH = sys.int_info.str_digits_check_threshold
"""JSON text this short (640 characters) cannot hold an integer longer than any
digit limit the interpreter allows (none may be set lower)."""


def fits_digit_limit(data: str | bytes) -> bool:
    """Whether no integer in ``data`` can be too long for ``json.loads``.

    The typed fast paths skip the fields they do not read without converting
    their numbers, so they would take a chunk carrying a 5,000-digit integer
    that ``json.loads`` refuses (``sys.set_int_max_str_digits``). Such a chunk
    must be longer than the limit, so short data never needs this check."""
    limit = sys.get_int_max_str_digits()
    return not limit or len(data) <= limit


def malformed(problem: str, data: str) -> StreamError:
    """The stream carried something we cannot read; quoting its start helps whoever debugs."""
    return StreamError("malformed", f"the model sent {problem}: {shorten(data[:80])!r}")


def truncated() -> StreamError:
    """The bytes ended before the model said it was done. Retryable: before the
    first token it is usually a dropped connection, worth one more try."""
    return StreamError("truncated", "the stream ended before the model finished", retryable=True)


def shorten(text: str) -> str:
    """One line, at most ``MAX_MESSAGE`` chars: multi-line provider text breaks chat layout."""
    text = _SPACES.sub(" ", text).strip()
    if len(text) > MAX_MESSAGE:
        return text[: MAX_MESSAGE - 1].rstrip() + "…"
    return text


def _parse_error(body: bytes) -> tuple[str, str]:
    """``(message, code)``; the code (or type) is "" when the body has none."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return "", ""
    try:
        parsed = json.loads(text)
    except ValueError:
        title = _HTML_TITLE.search(text) if text[:1] == "<" else None
        return shorten(title.group(1) if title else text), ""
    message, code = _from_json(parsed)
    return shorten(message or text), code


def _from_json(value: Any) -> tuple[str, str]:
    """Digs the message out of the known shapes, nested at most a few levels."""
    if isinstance(value, list) and value:
        return _from_json(value[0])  # Gemini: [{"error": {...}}]
    if isinstance(value, str):
        return value, ""
    if not isinstance(value, dict):
        return "", ""
    error = value.get("error")
    if isinstance(error, dict | list):
        message, code = _from_json(error)
        if message:
            return message, code or _code(value)
    elif isinstance(error, str) and error:
        return error, _code(value)  # {"error": "Not found"}
    code = _code(value)
    for key in ("message", "detail", "error_description", "msg"):
        text = value.get(key)
        if isinstance(text, str) and text:
            return text, code
        if isinstance(text, list) and text:  # FastAPI validation: [{"msg": ...}]
            return "; ".join(_from_json(item)[0] for item in text[:3]), code
    return code, code


def _code(value: dict[str, Any]) -> str:
    for key in ("code", "type", "status"):
        code = value.get(key)
        if isinstance(code, str | int) and not isinstance(code, bool) and code != "error":
            return str(code)
    return ""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive even for a plain dict (httpx.Headers already is)."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if math.isnan(number) or math.isinf(number) or number < 0:
        return None
    return number
