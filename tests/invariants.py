"""The delivery promise, checked on what a fake platform holds after a test.

For every reply: the platform's final text is the model's text (modulo
neutralisation and the fence closers/openers the engine adds between
continuation messages), or for a reply that ended early a prefix of it with a
note; no message is left streaming or with a Stop button; exactly one reply per
user message; no unneutralised mention in any field of any call; no 429 the
test didn't inject. (No credential in the logs is checked suite-wide by
``tests.log_guard``.)

``check_slack`` returns the violations as sentences, so a failing property
test says every broken promise at once; ``assert_slack`` asserts there are none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bots.slack.format import ZWSP
from bots.slack.sink import MESSAGE_LIMIT
from core.markdown import Paginator, unsplit
from tests.fakes.slack_server import FakeSlack, Message

UNNEUTRALISED = re.compile(
    r"<(?:!(?:channel|here|everyone|subteam)|@[UW][A-Z0-9]+|#C)"
    r"|(?<![\w@\u200b])@(?:channel|here|everyone)\b",
    re.IGNORECASE,
)
"""A mention Slack would act on: special mentions, users, user groups, channels."""

NOTES = ("⏹️ Stopped.", "⚠️ The reply failed", "⚠️ The reply was interrupted")


@dataclass(frozen=True)
class Expected:
    """What one user message's reply must show: the model's whole text, or (when
    the test ends it early on purpose, or faults may) a prefix with a note."""

    model_text: str
    may_end_early: bool = False


def answer_of(message: Message) -> str:
    """The model text a message shows, neutralisation undone."""
    if message.source == "stream":
        text = message.markdown
    else:
        text = "".join(b["text"] for b in message.blocks or [] if b.get("type") == "markdown")
    return text.replace(ZWSP, "")


def notes_of(message: Message) -> str:
    return " ".join(
        e.get("text", "")
        for b in message.blocks or []
        if b.get("type") == "context"
        for e in b.get("elements", [])
    )


def joined(messages: list[Message], model_text: str) -> str:
    """The reply's text back from its messages: the engine's page decorations
    (fence closers and reopeners) removed where the model's pages carry them."""
    texts = [answer_of(m) for m in messages]
    plain = "".join(texts)
    if len(texts) == 1 or model_text.startswith(plain):
        return plain
    pages = Paginator(MESSAGE_LIMIT, reserve=16).freeze(model_text, True, 0)
    try:
        return unsplit(texts, pages[: len(texts)])
    except ValueError:
        return plain


def check_slack(
    slack: FakeSlack, channel: str, expected: Mapping[str, Expected], *, injected_429s: bool = True
) -> list[str]:
    """Violations of the delivery promise in ``channel``; ``expected`` maps each
    user message's thread ts to its reply's expected text."""
    problems: list[str] = []
    replies: dict[str, list[Message]] = {}
    for message in slack.bot_messages(channel):
        replies.setdefault(message.thread_ts or message.ts, []).append(message)
    for thread, want in expected.items():
        messages = replies.pop(thread, [])
        if not messages:
            problems.append(f"thread {thread}: no reply at all")
            continue
        text = joined(messages, want.model_text)
        last_notes = notes_of(messages[-1])
        ended_early = any(note in last_notes for note in NOTES)
        early_ok = want.may_end_early and ended_early and want.model_text.startswith(text)
        if text != want.model_text and not early_ok:
            problems.append(
                f"thread {thread}: shows {_clip(text)!r}, the model wrote "
                f"{_clip(want.model_text)!r}" + (f" (note: {last_notes!r})" if last_notes else "")
            )
        for message in messages:
            if message.streaming:
                problems.append(f"thread {thread}: message {message.ts} is still streaming")
            if any(b.get("block_id") == "chatrelay_controls" for b in message.blocks or []):
                problems.append(f"thread {thread}: message {message.ts} still shows Stop")
    for thread, messages in replies.items():
        problems.append(f"thread {thread}: {len(messages)} bot message(s) nobody asked for")
    for call in slack.calls:
        for field_name, value in _strings(call.params):
            if UNNEUTRALISED.search(value):
                problems.append(
                    f"{call.method} sent an unneutralised mention in {field_name}: {_clip(value)!r}"
                )
    natural = slack.natural_429s()
    if natural:
        problems.append(f"{natural} 429s the test did not inject")
    if not injected_429s and slack.faults.count(kind="429"):
        problems.append("429s were injected where none were expected")
    return problems


def assert_slack(slack: FakeSlack, channel: str, expected: Mapping[str, Expected]) -> None:
    problems = check_slack(slack, channel, expected)
    assert not problems, "delivery promise broken:\n- " + "\n- ".join(problems)


def _strings(value: Any, path: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def _clip(text: str, keep: int = 80) -> str:
    return text if len(text) <= 2 * keep else f"{text[:keep]}…{text[-keep:]}"
