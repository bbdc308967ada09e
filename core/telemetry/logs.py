"""Logging: JSON lines for production, a reply's context (platform, workspace,
channel, reply id) that follows it across its platform calls, and credentials
that never reach a log line.

The reply's context lives in context variables set when a reply starts
(``reply_scope``); asyncio copies context into the tasks a reply creates, so
every line logged on its behalf (engine, sink, HTTP client) carries it without
passing it around. The JSON lines' fields are ``JsonFormatter.FIELDS``,
documented in docs/logs.md (a test keeps the two in step).

Redaction happens where a line is finally written, in the formatters, because
that is the only place that sees everything a line is made of: the message
with its arguments (of any type), extra fields named in a format, the
traceback of ``exc_info`` and the ``stack_info``. Cleaning the message alone
(as a filter does) lets a token in an exception's text through. Two kinds of
credentials are recognised:

- by shape (``_SHAPES``): Slack, Discord, OpenAI/Anthropic and other providers'
  tokens, ``Authorization``/``x-api-key`` values, Discord webhook paths (whose
  second part is an interaction token), passwords in URLs;
- by value (``register_secret``/``register_secrets``): what has no shape, such as
  Slack's signing secret, from the settings chatrelay loaded.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, SecretBytes, SecretStr

reply_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("reply_id", default=None)


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """Where the reply being written goes, for every line logged on its behalf."""

    platform: str
    workspace: str
    channel: str
    trace_id: str | None = None
    """The reply's trace (32 hex digits) when tracing is on (``core.telemetry.tracing``)."""


reply_context: contextvars.ContextVar[ReplyContext | None] = contextvars.ContextVar(
    "reply_context", default=None
)


@contextlib.contextmanager
def reply_scope(reply: str, context: ReplyContext) -> Iterator[None]:
    """Every line logged inside (and in the tasks started inside) carries the
    reply's id and ``context``."""
    id_token = reply_id.set(reply)
    context_token = reply_context.set(context)
    try:
        yield
    finally:
        reply_context.reset(context_token)
        reply_id.reset(id_token)


REDACTED = "[redacted]"
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"

# Where a value in ``key: value``, ``key=value`` or ``"key": "value"`` ends.
_VALUE = r"[^\s\"'\\,;&<>(){}\[\]]"
_ANY_VALUE = _VALUE + "+"
_TOKEN_LIKE = f"(?={_VALUE}*[0-9._~+/=-]){_VALUE}{{6,}}"
"""A value with a digit or a symbol in it: a token, not a word."""


def _keyed(first: str, rest: str, group: str, value: str, scheme: bool = False) -> str:
    """A credential-named key (``slack_bot_token=``, ``"x-api-key": "``) and its
    value, captured as ``group``. ``first`` is the key's first letter in both
    cases, as a set: the engine skips a branch that starts with a set at once,
    not one that starts with ``(?i:...)``. The lookbehind then checks that the
    character before the key is no letter or digit (``x-api-key`` and
    ``client_secret`` count, ``csrftokens`` doesn't). The optional scheme is
    possessive, so a value already redacted is not redacted again as "Bearer"."""
    separator = r"[\"']?\s*[:=]\s*[\"']?"
    prefix = r"(?:(?i:bearer|bot|basic|token)\s+)?+" if scheme else ""
    return rf"{first}(?<![A-Za-z0-9].)(?i:{rest}){separator}{prefix}(?P<{group}>{value})"


# One pattern, so a line is scanned once (about 10 us for a line of 80
# characters). A branch whose secret is only part of the match (after a key, in
# a URL) captures the secret in a named group and only that is redacted; the
# others are redacted whole. Every branch starts with a literal or a set, which
# lets the engine skip it at once, and those that need a word start share one
# ``\b`` test.
_SHAPES = re.compile(
    "|".join(
        [
            # Always a credential, whatever the value looks like: Authorization,
            # x-api-key, OPENAI_API_KEY=, password=.
            _keyed("[Aa]", "uthorization|pi[_-]?key", "header", _ANY_VALUE, scheme=True),
            _keyed("[Pp]", "ass(?:wor)?d", "password", _ANY_VALUE),
            # Other credential-named keys (slack_bot_token=, "token":, client_secret=)
            # when the value looks like a token, so "SIGNING_SECRET: required" survives.
            _keyed("[Ss]", "ecret", "secret", _TOKEN_LIKE),
            _keyed("[Tt]", "oken", "token", _TOKEN_LIKE),
            # A password in a URL: redis://user:PASSWORD@host.
            r"://[^\s/@:\"'\\]*:(?P<userinfo>[^\s/@\"'\\\[\]]+)(?=@)",
            r"\b(?:"
            + "|".join(
                [
                    # Discord webhook and interaction paths: webhooks/<app id>/<token>/...,
                    # interactions/<id>/<token>/callback.
                    r"(?:webhooks|interactions)/\d+/(?P<webhook>[^/\s?#\"'\\<>{}\[\]]+)",
                    # Slack incoming webhooks and workflow triggers: the path is the secret.
                    r"hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/"
                    r"(?P<slack_hook>[^\s\"'\\<>\[\]]+)",
                    # Authorization schemes without their header.
                    r"[Bb](?i:earer)\s+(?P<bearer>[A-Za-z0-9._~+/-]{8,}=*)",
                    r"Bot\s+(?=[A-Za-z0-9._~+/-]*[0-9._~+/-])(?P<bot>[A-Za-z0-9._~+/-]{8,}=*)",
                    # Slack: bot, user, refresh, config (xoxe.xoxp-), cookie; app-level.
                    r"xox[a-z](?:\.xox[a-z])?-[A-Za-z0-9%-]+",
                    r"xapp-[A-Za-z0-9-]+",
                    # Discord interaction tokens: base64("interaction:<id>:...").
                    r"aW50ZXJhY3Rpb24[A-Za-z0-9_.=-]*",
                    # OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), OpenRouter (sk-or-)...
                    r"sk-[A-Za-z0-9_-]{8,}",
                    # Groq, Hugging Face, xAI, GitHub, GitLab, Google; AWS access keys.
                    r"gsk_[A-Za-z0-9_-]{16,}",
                    r"hf_[A-Za-z0-9_-]{16,}",
                    r"xai-[A-Za-z0-9_-]{16,}",
                    r"gh[pousr]_[A-Za-z0-9_-]{16,}",
                    r"github_pat_[A-Za-z0-9_-]{16,}",
                    r"glpat-[A-Za-z0-9_-]{16,}",
                    r"AIza[A-Za-z0-9_-]{16,}",
                    r"A(?:KIA|SIA)[0-9A-Z]{16}",
                    # JSON Web Tokens.
                    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
                    # Discord bot tokens: base64(user id).base64(timestamp).HMAC. The
                    # first part is 23 to 28 characters (ids of 17 to 20 digits: MT…,
                    # Nz…, OD…, OT…), the second 6 or 7.
                    r"[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}",
                ]
            )
            + ")",
        ]
    )
)

MIN_SECRET_LENGTH = 8
"""Shorter configured values are not registered: they are placeholders (vLLM's
``EMPTY``, ``none``) rather than credentials, and redacting every occurrence of a
short common word would mangle every line."""

_exact: tuple[str, ...] = ()
"""Registered secret values, longest first (so a secret containing another is
redacted whole). Replaced, never mutated: a reader in another thread sees the
old tuple or the new one."""

_SENSITIVE_KEY = re.compile(
    r"(?i)(?:authorization|api[-_]?key|secret|password|passwd|token|cookie|credentials?)$"
)


def _replace(match: re.Match[str]) -> str:
    secret = match.lastgroup
    if secret is None:
        return REDACTED
    whole, offset = match[0], match.start()
    start, end = match.span(secret)
    return whole[: start - offset] + REDACTED + whole[end - offset :]


def redact(text: str) -> str:
    """``text`` with every registered secret and anything shaped like a
    credential replaced by ``[redacted]``. Runs on every log line: a substring
    test per registered secret and one regex scan."""
    for secret in _exact:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _SHAPES.sub(_replace, text)


def register_secret(value: str | bytes | None) -> None:
    """Redact ``value`` wherever it appears, whatever its shape (and its
    URL-encoded form, as it appears in query strings). For credentials no
    pattern can recognise, such as Slack's signing secret (32 hex digits, like
    any digest)."""
    global _exact
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    values = {value, quote(value, safe="")}
    _exact = tuple(sorted(set(_exact) | values, key=len, reverse=True))


def register_secrets(*sources: object) -> None:
    """Register every credential in settings objects: the value of each
    ``SecretStr``/``SecretBytes`` field (nested models and lists included, such
    as ``LLM_FALLBACKS``' keys), string values under credential-named keys (an
    ``Authorization`` entry of ``LLM_EXTRA_HEADERS``) and passwords in URL fields
    (``REDIS_URL``). Call it with every settings object as soon as they are
    loaded, so no line logged afterwards can carry one."""
    seen: set[int] = set()
    for source in sources:
        _register_in(source, None, seen)


def registered_secrets() -> tuple[str, ...]:
    """The values ``redact`` replaces (tests save and restore them)."""
    return _exact


def reset_secrets(values: Iterable[str] = ()) -> None:
    """Forget every registered value, then register ``values``."""
    global _exact
    _exact = ()
    for value in values:
        register_secret(value)


def _register_in(value: object, key: str | None, seen: set[int]) -> None:
    if isinstance(value, SecretStr | SecretBytes):
        register_secret(value.get_secret_value())
    elif isinstance(value, str):
        if key is not None and _SENSITIVE_KEY.search(key):
            register_secret(value)
            register_secret(value.rsplit(None, 1)[-1] if value.strip() else None)  # "Bearer X"
        if "://" in value and "@" in value:
            with contextlib.suppress(ValueError):  # not a URL after all
                register_secret(urlsplit(value).password)
    elif isinstance(value, BaseModel | Mapping | list | tuple | set | frozenset):
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                _register_in(getattr(value, name, None), name, seen)
        elif isinstance(value, Mapping):
            for item_key, item in value.items():
                _register_in(item, str(item_key), seen)
        else:
            for item in value:
                _register_in(item, key, seen)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} without a repr>"


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, or what the call held when its arguments don't
    fit its format. Without this, logging's error handler prints the raw
    arguments to stderr, unredacted."""
    try:
        return record.getMessage()
    except Exception:
        return (
            f"unformattable log call: {_safe_repr(record.msg)} % {_safe_repr(record.args)}"
            f" ({record.pathname}:{record.lineno})"
        )


class RedactingFormatter(logging.Formatter):
    """Text lines (``TEXT_FORMAT`` by default) redacted once they are whole, so
    nothing the format pulls in (the message and its arguments, extra fields,
    the traceback, the stack) escapes, whatever its type."""

    def __init__(self, fmt: str = TEXT_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        try:
            return redact(super().format(record))
        except Exception:
            # A log call whose arguments don't fit its message: logging would
            # print them raw to stderr; say what was called instead.
            return redact(f"{record.levelname} {record.name}: {_message(record)}")

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        # Formatter.format caches this in record.exc_text, which other handlers
        # reuse: cache it redacted.
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))


class RedactingFilter(logging.Filter):
    """Cleans a record in place, for handlers whose formatter chatrelay does not
    control (a log shipper's, a test's): the message is formatted and redacted
    (its arguments dropped, since they can hold a token the format didn't
    show), the traceback is formatted and cached redacted in ``exc_text``, and
    ``stack_info`` and string extra fields are redacted."""

    _formatter = RedactingFormatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = _message(record)
        cleaned = redact(message)
        if record.args or cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRIBUTES and isinstance(value, str):
                setattr(record, name, redact(value))
        return True


_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class ReplyIdFilter(logging.Filter):
    """Copies the reply's context (``reply_scope``) onto each record: its id, and
    its platform, workspace, channel and trace id while one is being written.
    Values a call gave itself (``extra={"channel": ...}``) are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.reply_id = reply_id.get()
        where = reply_context.get()
        if where is not None:
            fields = vars(record)
            fields.setdefault("platform", where.platform)
            fields.setdefault("workspace", where.workspace)
            fields.setdefault("channel", where.channel)
            if where.trace_id is not None:
                fields.setdefault("trace_id", where.trace_id)
        return True


def error_code(error: BaseException) -> str:
    """The short ``error`` field of a line that reports ``error``: its class."""
    return type(error).__name__


class JsonFormatter(RedactingFormatter):
    """One JSON object per line, with the fields of ``FIELDS`` (in that order,
    each only when it has a value). Each field is redacted before encoding, so
    the patterns see the text as logged (not JSON-escaped) and a redaction can
    never break the encoding.

    Where a field comes from: the reply's context (``ReplyIdFilter``) for
    ``platform``, ``workspace``, ``channel``, ``reply_id`` and ``trace_id``; the
    call's ``extra`` for ``outcome`` (the last line of a reply) and ``error`` (a
    short code, such as ``rate_limited`` or an exception's class), which
    otherwise is the class of the exception the line logs (``exc_info``), whose
    traceback is ``traceback``."""

    FIELDS: tuple[str, ...] = (
        "time",
        "level",
        "logger",
        "message",
        "platform",
        "workspace",
        "channel",
        "reply_id",
        "trace_id",
        "outcome",
        "error",
        "traceback",
        "stack",
    )
    _FROM_RECORD = ("platform", "workspace", "channel", "reply_id", "trace_id", "outcome")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(_message(record)),
        }
        fields = vars(record)
        for name in self._FROM_RECORD:
            value = fields.get(name)
            if value is not None and value != "":
                entry[name] = redact(str(value))
        error = fields.get("error")
        if error is None and record.exc_info and record.exc_info[1] is not None:
            error = error_code(record.exc_info[1])
        if error is not None and error != "":
            entry["error"] = redact(str(error))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # cached by another formatter perhaps: redact again
            entry["traceback"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(fmt: str = "text") -> logging.Formatter:
    """The production formatter for ``LOG_FORMAT``: both redact."""
    return JsonFormatter() if fmt == "json" else RedactingFormatter()


def setup_logging(level: str, fmt: str = "text", secrets: Iterable[object] = ()) -> None:
    """Configure the root logger once, at start. ``secrets``: the settings
    objects loaded, whose credentials are registered (``register_secrets``)
    before the first line is written."""
    register_secrets(*secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ReplyIdFilter())
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    sys.excepthook = log_uncaught


def log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    """``sys.excepthook``: a crash's traceback goes through the formatter (and
    its redaction, in the chosen format) instead of raw to stderr, where it
    could print the token in an error's message or a URL."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("chatrelay").critical("uncaught exception", exc_info=(kind, error, traceback))
