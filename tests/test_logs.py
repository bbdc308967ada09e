"""No credential reaches a log line: every shape ``core.telemetry.logs`` redacts, the
registry of values that have no shape, and every way a record carries text
(arguments of any type, extra fields, tracebacks, stacks) in both formats."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr
from redis.asyncio import Redis

from bots.discord.limits import RateLimitLearner, route_template, token_digest
from bots.discord.settings import DiscordSettings
from bots.slack.settings import SlackSettings
from core.clock import MonotonicClock
from core.config import FallbackProvider, Settings
from core.llm.client import LLMClient
from core.service.responder import ReplyRequest, Responder
from core.state.keys import ConversationKey, Keys
from core.state.settings import StateSettings, load_state_settings
from core.state.store import State, open_state
from core.telemetry import logs
from tests.fakes.llm_server import FakeLLMServer, FakeResponse
from tests.fakes.recording_sink import RecordingSink
from tests.fakes.streams import chat_stream, split_events
from tests.state.conftest import keys, redis, redis_url

__all__ = ["keys", "redis", "redis_url"]


def discord_bot_token(user_id: int) -> str:
    """A Discord bot token's shape: base64(user id) . base64(timestamp) . HMAC."""
    first = base64.urlsafe_b64encode(str(user_id).encode()).decode().rstrip("=")
    return f"{first}.GhJk3w.abcdefghijklmnopqrstuvwxyz0123456789AB"


def interaction_token(interaction_id: int) -> str:
    """A Discord interaction token's shape: base64("interaction:<id>:<random>")."""
    raw = f"interaction:{interaction_id}:Zk9xR2tXbXh1c3RvbWVyc2VjcmV0"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


BOT_TOKENS = [
    discord_bot_token(10896454778155123),  # 17 digits: "MT..."
    discord_bot_token(896547781551234567),  # 18 digits from 8: "OD..."
    discord_bot_token(996547781551234567),  # 18 digits from 9: "OT..."
    discord_bot_token(7965477815512345678),  # 19 digits: "Nz..."
    discord_bot_token(12345678901234567890),  # 20 digits
]
INTERACTION = interaction_token(1234567890123456789)


@pytest.fixture(autouse=True)
def no_registered_secrets() -> Iterator[None]:
    """Each test starts with an empty registry and leaves the suite's as it was."""
    saved = logs.registered_secrets()
    logs.reset_secrets()
    yield
    logs.reset_secrets(saved)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Slack
        ("token xoxb-1234-5678-abcdefgh ok", "token [redacted] ok"),
        ("user xoxp-1-2-3-abc", "user [redacted]"),
        ("rotated xoxe.xoxp-1-Mi0yLTEyMzQ", "rotated [redacted]"),
        ("refresh xoxe-1-My0xLTU2Nzg", "refresh [redacted]"),
        ("cookie xoxd-abc%2Fdef%3D", "cookie [redacted]"),
        ("app xapp-1-A111-222-abc", "app [redacted]"),
        (
            "https://hooks.slack.com/services/T0/B0/XyZ a",
            "https://hooks.slack.com/services/[redacted] a",
        ),
        # Model providers
        ("key sk-proj-abcdefghijklmnop", "key [redacted]"),
        ("key sk-ant-api03-abc_DEF-123456", "key [redacted]"),
        ("key sk-or-v1-0123456789abcdef", "key [redacted]"),
        ("key gsk_abcdefghijklmnop1234", "key [redacted]"),
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer [redacted]"),
        ("authorization=Basic dXNlcjpwYXNz", "authorization=Basic [redacted]"),
        ("{'Authorization': 'Bearer sk-xyz'}", "{'Authorization': 'Bearer [redacted]'}"),
        ("headers={'x-api-key': 'plainword'}", "headers={'x-api-key': '[redacted]'}"),
        ('{"X-Api-Key": "anything at all"}', '{"X-Api-Key": "[redacted] at all"}'),
        ("OPENAI_API_KEY=abc", "OPENAI_API_KEY=[redacted]"),
        ("sent Bearer abcdefghijklmnop", "sent Bearer [redacted]"),
        # Discord
        (f"login with {BOT_TOKENS[0]}", "login with [redacted]"),
        (f"login with {BOT_TOKENS[1]}", "login with [redacted]"),
        (f"login with {BOT_TOKENS[2]}", "login with [redacted]"),
        (f"login with {BOT_TOKENS[3]}", "login with [redacted]"),
        (f"login with {BOT_TOKENS[4]}", "login with [redacted]"),
        (f"Authorization: Bot {BOT_TOKENS[1]}", "Authorization: Bot [redacted]"),
        ("Bot test-token", "Bot [redacted]"),
        (f"token {INTERACTION} expired", "token [redacted] expired"),
        (
            f"PATCH https://discord.com/api/v10/webhooks/1234567/{INTERACTION}/messages/@original",
            "PATCH https://discord.com/api/v10/webhooks/1234567/[redacted]/messages/@original",
        ),
        (  # a token of no known shape, in a webhook path
            "POST /api/v10/webhooks/42/opaque-token-value?wait=true",
            "POST /api/v10/webhooks/42/[redacted]?wait=true",
        ),
        (
            "POST /api/v10/interactions/42/opaque-token-value/callback",
            "POST /api/v10/interactions/42/[redacted]/callback",
        ),
        # Keys, URLs, JWTs
        ("slack_bot_token='abc-123456'", "slack_bot_token='[redacted]'"),
        ("{'token': 'abcdef12'}", "{'token': '[redacted]'}"),
        ("client_secret=0a1b2c3d4e", "client_secret=[redacted]"),
        ("password: hunter", "password: [redacted]"),
        ("redis://:hunter2pw@redis:6379/0", "redis://:[redacted]@redis:6379/0"),
        ("rediss://user:pw@h:6380", "rediss://user:[redacted]@h:6380"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl", "jwt [redacted]"),
    ],
)
def test_credential_shapes_are_redacted(text: str, expected: str) -> None:
    assert logs.redact(text) == expected
    assert logs.redact(expected) == expected  # a redacted line stays as it is


@pytest.mark.parametrize(
    "text",
    [
        "reply r-8f3a2b streamed 412 chars in 3 updates (first visible after 0.84s)",
        "invalid setting SLACK_SIGNING_SECRET: required in HTTP mode",
        "first token: 0.3s",
        "Bot answered the question",
        "task-1234567890 and ask-questions-abcdefgh",
        "discord:interaction:0123456789abcdef0123 blocked for 1.20s",
        "PATCH /api/v10/webhooks/{id}/{token}/messages/@original",
        "a sha256 of 0d5e8b2f0c7a4c1e9b3f6a8d2e4c6b8a0f1e3d5c7b9a1f3e5d7c9b1a3f5e7d9c",
        "could not record token usage of U0123 in C0456",
        "max_tokens=2048 context_tokens: 8000",
        "core.state.dedupe: redis://redis:6379/0",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert logs.redact(text) == text


# --------------------------------------------------------------------------- registry


def test_registered_values_are_redacted_whatever_their_shape() -> None:
    signing_secret = "8f742231b10e8888abcd99yyyzzz85a5"  # 32 characters, no known shape
    assert logs.redact(f"verifying with {signing_secret}") == f"verifying with {signing_secret}"
    logs.register_secret(signing_secret)
    assert logs.redact(f"verifying with {signing_secret}.") == "verifying with [redacted]."


def test_registered_values_are_redacted_url_encoded_too() -> None:
    logs.register_secret("pa ss/word+1")
    assert logs.redact("GET /x?key=pa%20ss%2Fword%2B1&y=1") == "GET /x?key=[redacted]&y=1"
    assert logs.registered_secrets() == ("pa%20ss%2Fword%2B1", "pa ss/word+1")


def test_short_values_are_not_registered() -> None:
    logs.register_secret("EMPTY")  # vLLM's conventional placeholder key
    logs.register_secret("")
    logs.register_secret(None)
    assert logs.registered_secrets() == ()
    assert logs.redact("EMPTY queue") == "EMPTY queue"


def test_register_secrets_walks_every_settings_object(monkeypatch: pytest.MonkeyPatch) -> None:
    core = Settings(
        _env_file=None,  # type: ignore[call-arg]
        llm_api_key=SecretStr("primary-key-0001"),
        llm_fallbacks=[
            FallbackProvider(model="m1", api_key=SecretStr("fallback-key-0002")),
            FallbackProvider(model="m2"),
        ],
        llm_extra_headers={
            "X-Auth-Token": "header-token-0003",
            "HTTP-Referer": "https://a.example",
        },
    )
    slack = SlackSettings(
        _env_file=None,  # type: ignore[call-arg]
        slack_bot_token=SecretStr("xoxb-bot-0004"),
        slack_app_token=None,
        slack_signing_secret=SecretStr("signing-secret-0005"),
    )
    discord = DiscordSettings(_env_file=None, discord_bot_token=SecretStr("discord-token-0006"))  # type: ignore[call-arg]
    state = StateSettings(_env_file=None, redis_url="rediss://:redis-pass-0007@db:6380/0")  # type: ignore[call-arg]
    logs.register_secrets(core, slack, discord, state, None)
    assert set(logs.registered_secrets()) == {
        "primary-key-0001",
        "fallback-key-0002",
        "header-token-0003",
        "xoxb-bot-0004",
        "signing-secret-0005",
        "discord-token-0006",
        "redis-pass-0007",
    }


def test_register_secrets_takes_the_credential_out_of_an_authorization_header() -> None:
    class Extra(BaseModel):
        headers: dict[str, str]

    logs.register_secrets(Extra(headers={"Authorization": "Token opaque-value-1"}))
    assert set(logs.registered_secrets()) == {
        "Token opaque-value-1",
        "Token%20opaque-value-1",  # as in a query string
        "opaque-value-1",
    }
    assert logs.redact("sent opaque-value-1") == "sent [redacted]"


# --------------------------------------------------------------------------- records


def capture(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    """A logger writing through the production formatter of ``fmt`` only."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(fmt))
    logger = logging.getLogger(f"test.logs.{fmt}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def _fail_with_token() -> None:
    raise RuntimeError(f"call failed: Authorization: Bot {BOT_TOKENS[1]}")


def test_text_tracebacks_are_redacted() -> None:
    logger, stream = capture("text")
    try:
        _fail_with_token()
    except RuntimeError:
        logger.exception("request to %s failed", f"/webhooks/1/{INTERACTION}")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "ERROR test.logs.text: request to /webhooks/1/[redacted] failed"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: call failed: Authorization: Bot [redacted]"
    assert BOT_TOKENS[1] not in stream.getvalue() and INTERACTION not in stream.getvalue()


def test_json_tracebacks_are_redacted() -> None:
    logger, stream = capture("json")
    try:
        _fail_with_token()
    except RuntimeError:
        logger.exception("request with xapp-1-A111-222-abc failed")
    entry = json.loads(stream.getvalue())
    assert set(entry) == {"time", "level", "logger", "message", "error", "traceback"}
    assert entry["message"] == "request with [redacted] failed"
    assert entry["level"] == "error" and entry["logger"] == "test.logs.json"
    assert entry["error"] == "RuntimeError"  # the class: the traceback has the rest
    assert entry["traceback"].splitlines()[0] == "Traceback (most recent call last):"
    assert entry["traceback"].splitlines()[-1] == (
        "RuntimeError: call failed: Authorization: Bot [redacted]"
    )
    assert BOT_TOKENS[1] not in stream.getvalue()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_exc_info_given_as_a_tuple_is_redacted(fmt: str) -> None:
    logger, stream = capture(fmt)
    try:
        raise ValueError("bad key sk-ant-api03-abcdefghijkl")
    except ValueError as exc:
        logger.warning("failed", exc_info=(type(exc), exc, exc.__traceback__))
    assert "sk-ant-api03-abcdefghijkl" not in stream.getvalue()
    last = stream.getvalue().splitlines()[-1]
    tail = json.loads(last)["traceback"].splitlines()[-1] if fmt == "json" else last
    assert tail == "ValueError: bad key [redacted]"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_stack_info_is_redacted(fmt: str) -> None:
    logger, stream = capture(fmt)
    logger.info("here", stack_info=True)  # the stack quotes this line: xoxb-in-a-comment-1
    output = stream.getvalue()
    stack = json.loads(output)["stack"] if fmt == "json" else output
    assert "xoxb-in-a-comment-1" not in output
    assert "# the stack quotes this line: [redacted]" in stack


@pytest.mark.parametrize(
    ("message", "args", "expected"),
    [
        ("%(user)s used %(key)s", ({"user": "U1", "key": "xoxb-9-abc"},), "U1 used [redacted]"),
        (
            "headers %r",
            ({"Authorization": "Bearer abcdef123456"},),
            ("headers {'Authorization': 'Bearer [redacted]'}"),
        ),
        ("body %s", (b"token=xoxb-1-abc&x=1",), "body b'token=[redacted]&x=1'"),
        ("url %s", (ValueError(f"/webhooks/9/{INTERACTION}"),), "url /webhooks/9/[redacted]"),
    ],
)
def test_arguments_of_any_type_are_redacted(
    message: str, args: tuple[object, ...], expected: str
) -> None:
    for fmt in ("text", "json"):
        logger, stream = capture(fmt)
        logger.info(message, *args)
        line = stream.getvalue().rstrip("\n")
        written = json.loads(line)["message"] if fmt == "json" else line
        assert written == (expected if fmt == "json" else f"INFO test.logs.text: {expected}")


def test_extra_fields_named_in_a_format_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.RedactingFormatter("%(message)s url=%(url)s"))
    record = logging.makeLogRecord(
        {"msg": "calling", "url": f"https://discord.com/api/webhooks/1/{INTERACTION}"}
    )
    handler.handle(record)
    assert stream.getvalue() == "calling url=https://discord.com/api/webhooks/1/[redacted]\n"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_call_whose_arguments_do_not_fit_is_written_redacted(fmt: str) -> None:
    logger, stream = capture(fmt)
    logger.info("%d requests", "xoxb-7-abc")  # a bug in a log call: logging would print it raw
    line = stream.getvalue().rstrip("\n")
    written = json.loads(line)["message"] if fmt == "json" else line
    prefix = "" if fmt == "json" else "INFO test.logs.text: "
    assert re.fullmatch(
        re.escape(f"{prefix}unformattable log call: '%d requests' % ('[redacted]',) (")
        + r".*test_logs\.py:\d+\)",
        written,
    ), written


def test_filter_cleans_a_record_in_place_for_other_handlers() -> None:
    try:
        _fail_with_token()
    except RuntimeError as exc:
        error = exc
    record = logging.LogRecord(
        "lib",
        logging.ERROR,
        __file__,
        1,
        "with %s",
        ("xapp-1-A111-222-abc",),
        (type(error), error, error.__traceback__),
    )
    record.stack_info = "Stack (most recent call last):\n  send(token='xoxb-5-abc')"
    record.url = f"/webhooks/3/{INTERACTION}"
    assert logs.RedactingFilter().filter(record) is True
    assert (record.msg, record.args) == ("with [redacted]", None)
    assert record.exc_text is not None
    assert (
        record.exc_text.splitlines()[-1]
        == "RuntimeError: call failed: Authorization: Bot [redacted]"
    )
    assert record.stack_info == "Stack (most recent call last):\n  send(token='[redacted]')"
    assert record.url == "/webhooks/3/[redacted]"
    # A formatter that knows nothing of redaction now writes the cleaned record.
    written = logging.Formatter("%(message)s").format(record)
    assert BOT_TOKENS[1] not in written and "xapp-1" not in written


def test_json_keeps_its_shape() -> None:
    token = logs.reply_id.set("r-9")
    try:
        record = logging.LogRecord(
            "core.reply.engine", logging.INFO, __file__, 1, "done %d", (3,), None
        )
        logs.ReplyIdFilter().filter(record)
        entry = json.loads(logs.JsonFormatter().format(record))
    finally:
        logs.reply_id.reset(token)
    assert list(entry) == ["time", "level", "logger", "message", "reply_id"]
    assert entry["message"] == "done 3" and entry["reply_id"] == "r-9"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


def test_setup_logging_registers_the_settings_secrets_and_redacts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    slack = SlackSettings(
        _env_file=None,  # type: ignore[call-arg]
        slack_bot_token=SecretStr("xoxb-1-abc"),
        slack_signing_secret=SecretStr("0123456789abcdef0123456789abcdef"),
    )
    try:
        logs.setup_logging("INFO", "json", secrets=[slack])
        (handler,) = root.handlers
        assert isinstance(handler.formatter, logs.JsonFormatter)
        record = logging.LogRecord(
            "bots.slack",
            logging.INFO,
            __file__,
            1,
            "sig %s",
            ("0123456789abcdef0123456789abcdef",),
            None,
        )
        assert json.loads(handler.format(record))["message"] == "sig [redacted]"
        assert sys.excepthook is logs.log_uncaught
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_an_uncaught_exception_is_logged_redacted(caplog: pytest.LogCaptureFixture) -> None:
    try:
        _fail_with_token()
    except RuntimeError as exc:
        error = exc
    with caplog.at_level(logging.CRITICAL, logger="chatrelay"):
        logs.log_uncaught(RuntimeError, error, error.__traceback__)
    (record,) = caplog.records
    assert (record.name, record.getMessage()) == ("chatrelay", "uncaught exception")
    text = logs.formatter("text").format(record)
    assert text.splitlines()[0] == "CRITICAL chatrelay: uncaught exception"
    assert text.splitlines()[-1] == "RuntimeError: call failed: Authorization: Bot [redacted]"


# --------------------------------------------------------------------------- Discord 429s


class _Budget:
    def __init__(self) -> None:
        self.blocked: list[tuple[str, float]] = []

    async def block(self, scope: str, seconds: float) -> None:
        self.blocked.append((scope, seconds))


def test_route_template_drops_tokens_and_ids() -> None:
    assert (
        route_template(f"/api/v10/webhooks/123/{INTERACTION}/messages/@original")
        == "/api/v10/webhooks/{id}/{token}/messages/@original"
    )
    assert (
        route_template("/api/v10/interactions/99/opaque/callback")
        == "/api/v10/interactions/{id}/{token}/callback"
    )
    assert (
        route_template("/api/v10/channels/12/messages/34") == "/api/v10/channels/{id}/messages/{id}"
    )


async def test_a_429_on_an_interaction_logs_the_route_not_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The token here has no shape the redactor knows: the line itself must not carry it."""
    budget = _Budget()
    learner = RateLimitLearner(budget)  # type: ignore[arg-type]
    token = "opaque-interaction-token"
    headers = {"Retry-After": "1.5", "X-RateLimit-Bucket": "abcd1234", "X-RateLimit-Scope": "user"}
    with caplog.at_level(logging.WARNING, logger="bots.discord.limits"):
        await learner.learn(
            "PATCH", f"/api/v10/webhooks/77/{token}/messages/@original", 429, headers
        )
    scope = f"discord:interaction:{token_digest(token)}"
    assert [r.getMessage() for r in caplog.records] == [
        "Discord answered 429 to PATCH /api/v10/webhooks/{id}/{token}/messages/@original "
        f"(bucket abcd1234, user scope): {scope} blocked for 1.50s"
    ]
    assert budget.blocked == [(scope, 1.5)]


# --------------------------------------------------------------------------- the JSON schema


@pytest.fixture
async def state(redis_url: str, keys: Keys, redis: Redis) -> AsyncIterator[State]:
    settings = load_state_settings(redis_url=redis_url, redis_prefix=keys.prefix)
    async with open_state(settings) as opened:
        yield opened


DOCS = Path(__file__).resolve().parent.parent / "docs" / "logs.md"


def documented_fields() -> list[str]:
    """The fields of docs/logs.md's JSON table: its rows' first cells."""
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("<!-- log fields -->", 2)[1]
    return re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)


def everything_record() -> logging.LogRecord:
    """A record with every field the JSON formatter can write."""
    try:
        _fail_with_token()
    except RuntimeError as exc:
        error = exc
    record = logging.LogRecord(
        "core.service.responder",
        logging.ERROR,
        __file__,
        1,
        "reply %s",
        ("failed",),
        (type(error), error, error.__traceback__),
    )
    record.stack_info = "Stack (most recent call last):\n  here()"
    record.outcome = "failed"
    context = logs.ReplyContext("slack", "T1", "C1", "0af7651916cd43dd8448eb211c80319c")
    with logs.reply_scope("r-1", context):
        logs.ReplyIdFilter().filter(record)
    return record


def test_the_docs_list_every_field_the_json_formatter_writes() -> None:
    entry = json.loads(logs.JsonFormatter().format(everything_record()))
    assert list(entry) == list(logs.JsonFormatter.FIELDS)  # all of them, in that order
    assert documented_fields() == list(logs.JsonFormatter.FIELDS)


def test_a_line_logged_during_a_reply_carries_its_context() -> None:
    logger, stream = capture("json")
    handler = logger.handlers[0]
    handler.addFilter(logs.ReplyIdFilter())
    logger.info("before")
    context = logs.ReplyContext("discord", "G1", "42")
    with logs.reply_scope("r-7", context):
        logger.info("during")
        logger.info("ended", extra={"outcome": "done"})
        logger.info("own channel", extra={"channel": "43"})  # a call's own value is kept
    logger.info("after")
    before, during, ended, own, after = (
        json.loads(line) for line in stream.getvalue().splitlines()
    )
    assert set(before) == set(after) == {"time", "level", "logger", "message"}
    where = {"platform": "discord", "workspace": "G1", "channel": "42", "reply_id": "r-7"}
    assert {k: during[k] for k in where} == where and "outcome" not in during
    assert "trace_id" not in during  # tracing is off
    assert ended["outcome"] == "done"
    assert own["channel"] == "43"


async def test_context_follows_a_reply_into_the_tasks_it_starts() -> None:
    seen: list[logs.ReplyContext | None] = []

    async def child() -> None:
        seen.append(logs.reply_context.get())

    context = logs.ReplyContext("slack", "T1", "C1")
    with logs.reply_scope("r-1", context):
        await asyncio.create_task(child())
    assert seen == [context]
    assert logs.reply_context.get() is None and logs.reply_id.get() is None


def test_error_is_a_short_code_given_or_the_exceptions_class() -> None:
    logger, stream = capture("json")
    logger.warning("platform call update failed: 429", extra={"error": "rate_limited"})
    try:
        raise ConnectionError("refused")
    except ConnectionError:
        logger.exception("could not store")
        logger.error("given wins", exc_info=True, extra={"error": "store_failed"})
    logger.warning("no error here")
    given, from_class, both, plain = (json.loads(line) for line in stream.getvalue().splitlines())
    assert given["error"] == "rate_limited" and "traceback" not in given
    assert (
        from_class["error"] == "ConnectionError"
        and "ConnectionError: refused" in (from_class["traceback"])
    )
    assert both["error"] == "store_failed"
    assert "error" not in plain


def test_json_tracebacks_go_through_the_redacting_formatexception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The JSON formatter redacts a traceback as the text one does (by value as
    well as by shape), through the same method."""
    calls: list[object] = []
    original = logs.RedactingFormatter.formatException

    def spy(self: logs.RedactingFormatter, ei: object) -> str:
        calls.append(ei)
        return original(self, ei)  # type: ignore[arg-type]

    monkeypatch.setattr(logs.RedactingFormatter, "formatException", spy)
    logs.register_secret("0123456789abcdef0123456789abcdef")  # no shape: by value only
    logger, stream = capture("json")
    try:
        raise ValueError("signature 0123456789abcdef0123456789abcdef did not match")
    except ValueError:
        logger.exception("verification failed")
    assert len(calls) == 1
    entry = json.loads(stream.getvalue())
    assert entry["traceback"].splitlines()[-1] == "ValueError: signature [redacted] did not match"
    assert "0123456789abcdef" not in stream.getvalue()


def test_a_traceback_another_formatter_cached_unredacted_is_redacted_in_json() -> None:
    try:
        _fail_with_token()
    except RuntimeError as exc:
        error = exc
    record = logging.LogRecord(
        "lib", logging.ERROR, __file__, 1, "failed", None, (type(error), error, error.__traceback__)
    )
    logging.Formatter().format(record)  # caches exc_text, token included
    assert record.exc_text is not None and BOT_TOKENS[1] in record.exc_text
    entry = json.loads(logs.JsonFormatter().format(record))
    assert BOT_TOKENS[1] not in json.dumps(entry)
    assert entry["traceback"].endswith("Authorization: Bot [redacted]")


async def test_every_line_of_a_reply_carries_its_context_and_the_last_its_outcome(
    state: State, llm: LLMClient, llm_server: FakeLLMServer
) -> None:
    """Through the responder: a platform call fails once (an error line), then
    the reply ends (the outcome line)."""
    llm_server.enqueue(FakeResponse(chunks=split_events(chat_stream(["Hi", " there."]))))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ReplyIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    sink = RecordingSink(
        MonotonicClock(), fail=lambda call, n: RuntimeError("platform hiccup") if n == 0 else None
    )
    conversation = ConversationKey("slack", "T9", "C9", "1.0")
    request = ReplyRequest(
        platform="slack",
        conversation=conversation,
        author="U1",
        text="hello?",
        channel="C9",
        system_prompt="be brief",
    )
    try:
        result = await Responder(state, llm).respond(request, lambda reply_id: sink)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert result.outcome.state == "done"
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [e for e in entries if e.get("reply_id")]
    assert mine and len({e["reply_id"] for e in mine}) == 1
    for entry in mine:
        assert (entry["platform"], entry["workspace"], entry["channel"]) == ("slack", "T9", "C9")
    failed = [e for e in mine if "platform hiccup" in e["message"]]
    assert [e["error"] for e in failed] == ["RuntimeError"]
    assert mine[-1]["outcome"] == "done" and mine[-1]["logger"] == "core.service.responder"
    assert [e for e in mine if "outcome" in e] == [mine[-1]]
