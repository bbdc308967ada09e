"""A fake Slack on 127.0.0.1: Web API, Socket Mode and Events API delivery, limits included.

Slack can't be reached from the test machines, and a mocked client proves nothing
about the real one: how slack_sdk builds URLs from ``base_url``, sends JSON or form
bodies, reads ``Retry-After`` or opens the Socket Mode WebSocket. So the tests run
the REAL ``AsyncWebClient``/``SocketModeClient``/Bolt ``AsyncApp`` against this
server, which keeps Slack's state (messages, streams, statuses) and enforces the
rules that break streaming bots in production: text and block limits, the native
stream lifecycle, per-method rate limits, 3-second acks and retries.

Usage::

    async with FakeSlack(team_id="T1", bot_user_id="UBOT") as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        event = slack.user_message("C1", "hi <@UBOT>", user="U1", mention=True)
        await slack.deliver_socket(event)          # to a connected Socket Mode app
        await slack.wait_for(lambda: slack.calls_to("chat.stopStream"), timeout=2)
        assert slack.rendered("C1", ts) == "Hello"

What the fake enforces, and how (numbers Slack doesn't publish are marked *assumed*):

- Auth: ``Authorization: Bearer <token>`` or a ``token`` parameter. No token →
  ``not_authed``; a token not in ``bot_tokens``/``app_tokens`` → ``invalid_auth``;
  an app token on a bot method (or the reverse) → ``not_allowed_token_type``.
- Rate limits: a sliding window per (team, method): at most ``Limit.count`` accepted
  calls in any ``Limit.window`` seconds; the call over the limit gets HTTP 429,
  ``Retry-After: <whole seconds until the oldest call leaves the window, ≥ 1>`` and
  ``{"ok": false, "error": "ratelimited"}``; rejected calls don't use up the window.
  Tiers: 1 = 1/min, 2 = 20/min, 3 = 50/min, 4 = 100/min (see ``DEFAULT_LIMITS``).
  ``chat.postMessage`` is limited per (team, channel) — 3 per 3 s, i.e. 1/s with a
  burst of 3 (*assumed* burst) — and per team by ``"chat.postMessage/workspace"``
  (300/min, *assumed*). Slack's real limiter tolerates some burst over a tier; the
  fake doesn't, on purpose: code that passes here has headroom. Pass
  ``limits={"chat.update": Limit(3, 1.0)}`` to exercise a limit in a second, a
  value of ``None`` to lift one, or ``rate_limits=False`` to lift all.
- Text: ``text`` over ``max_text`` (4,000) → ``msg_too_long`` (text above 40,000 is
  truncated when ``max_text`` is raised past it); ``markdown_text`` over 12,000 →
  ``msg_too_long``; blocks: more than 50, a section text over 3,000, a header over
  150, markdown blocks over 12,000 in total, or a duplicate ``block_id`` →
  ``invalid_blocks``.
- Native streaming (``chat.startStream``/``appendStream``/``stopStream``): outside
  DMs (channel ids not starting with ``D``) ``recipient_user_id`` and
  ``recipient_team_id`` are required; ``chat.update`` on a streaming message →
  ``streaming_state_conflict``; a stream older than ``stream_ttl`` (300 s, *assumed*
  from observation) is closed server-side and appends then get
  ``message_not_in_streaming_state``; ``user_stops_stream(ts)`` makes appends (and
  the final stop) answer ``stopped_by_user``; ``native_streaming=False`` makes the
  three methods answer ``streaming_error`` (``feature_not_enabled``). A streamed
  message takes at most ``stream_byte_cap`` (11,000, *assumed*: other bots report
  appends failing around 10.6–11.3k UTF-8 bytes; Slack documents no number) bytes
  of markdown: an append or stop that would pass it gets ``msg_too_long`` (our
  choice of error: Slack's own is unknown) and is not applied.

Direct messages, in either of Slack's two experiences (``experience``): with
``"assistant"`` (manifest ``assistant_view``) ``user_opens_assistant_thread``
stores the thread root Slack makes (``subtype: "assistant_app_thread"``) and
returns ``assistant_thread_started``; with ``"agent"`` (``agent_view``, Slack's
"Migrating to the Agent messaging experience") ``user_opens_dm`` returns
``app_home_opened`` with ``tab: "messages"`` and no root is made: the user's
top-level message is the root. ``assistant.threads.setSuggestedPrompts`` takes
an optional ``thread_ts`` (without it the prompts go with the channel, recorded
under ``(channel, "")``); an agent app's call WITH one answers ok but is lost
(``lost_prompts``), as Slack's reference says it "will silently fail".

Faults: ``slack.faults`` (a ``tests.fakes.faults.FaultSchedule`` keyed by method
name) injects 429s, 500s, ``internal_error``, slow answers and dropped connections on
chosen calls, or at random from a seed; ``fail()`` adds a rule to it. Each ``Call``
records its ``ordinal`` and the fault it got (``injected``);
``natural_429s()`` counts only the 429s the fake's own limits answered.

Time: everything the fake measures uses ``clock`` (default ``time.monotonic``; pass
a settable clock to expire streams or empty rate windows without sleeping). Only
what the app checks against the wall clock — the signing timestamp, ``event_time``
— uses ``time.time()``.
"""

from tests.fakes.slack_server.blocks import blocks_text, validate_blocks
from tests.fakes.slack_server.events import (
    app_home_opened,
    app_mention,
    assistant_thread_started,
    message,
    message_changed,
    message_im,
    new_event_id,
)
from tests.fakes.slack_server.events_api import sign, signature_headers
from tests.fakes.slack_server.fake import FakeSlack
from tests.fakes.slack_server.limits import (
    APP_TOKEN_METHODS,
    DEFAULT_LIMITS,
    MAX_BLOCKS,
    MAX_HEADER_TEXT,
    MAX_LOADING_MESSAGES,
    MAX_MARKDOWN_BLOCKS_TEXT,
    MAX_MARKDOWN_TEXT,
    MAX_SECTION_TEXT,
    MAX_SUGGESTED_PROMPTS,
    POST_MESSAGE_WORKSPACE,
    STATUS_AUTO_CLEAR,
    STREAM_BYTE_CAP,
    STREAM_METHODS,
    TIER_1,
    TIER_2,
    TIER_3,
    TIER_4,
    Limit,
)
from tests.fakes.slack_server.params import JSON, SlackError
from tests.fakes.slack_server.records import (
    Call,
    Delivery,
    Message,
    Revision,
    SocketConnection,
    Status,
)
from tests.fakes.slack_server.state import Clock, Handler

__all__ = [
    "APP_TOKEN_METHODS",
    "DEFAULT_LIMITS",
    "JSON",
    "MAX_BLOCKS",
    "MAX_HEADER_TEXT",
    "MAX_LOADING_MESSAGES",
    "MAX_MARKDOWN_BLOCKS_TEXT",
    "MAX_MARKDOWN_TEXT",
    "MAX_SECTION_TEXT",
    "MAX_SUGGESTED_PROMPTS",
    "POST_MESSAGE_WORKSPACE",
    "STATUS_AUTO_CLEAR",
    "STREAM_BYTE_CAP",
    "STREAM_METHODS",
    "TIER_1",
    "TIER_2",
    "TIER_3",
    "TIER_4",
    "Call",
    "Clock",
    "Delivery",
    "FakeSlack",
    "Handler",
    "Limit",
    "Message",
    "Revision",
    "SlackError",
    "SocketConnection",
    "Status",
    "app_home_opened",
    "app_mention",
    "assistant_thread_started",
    "blocks_text",
    "message",
    "message_changed",
    "message_im",
    "new_event_id",
    "sign",
    "signature_headers",
    "validate_blocks",
]
