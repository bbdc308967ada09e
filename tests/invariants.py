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
``check_discord``/``assert_discord`` do the same on the fake Discord, where the
mention promise is Discord's own: every send and edit carries
``allowed_mentions`` that lets nobody be pinged (model text may show a mention,
neutralised, but Discord re-parses each edit and only ``allowed_mentions``
decides who is notified; the asker may be, by the reply itself).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bots.discord.format import EMPTY_REPLY, FULLWIDTH_AT, WRITING, RenderMode, message_limit
from bots.slack.format import ZWSP
from bots.slack.sink import MESSAGE_LIMIT
from core.reply.markdown import Paginator, unsplit
from tests.fakes.discord_server import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    INTERACTION_APPLICATION_COMMAND,
    FakeDiscord,
)
from tests.fakes.discord_server import MessageRecord as DiscordMessage
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
        if slack.status(channel, thread):
            problems.append(f"thread {thread}: still shows {slack.status(channel, thread)!r}")
        if not messages:
            problems.append(f"thread {thread}: no reply at all")
            continue
        text = joined(messages, want.model_text)
        last_notes = notes_of(messages[-1])
        ended_early = any(note in last_notes for note in NOTES)
        early_ok = want.may_end_early and ended_early and want.model_text.startswith(text)
        if text != want.model_text and not early_ok:
            at = _first_difference(text, want.model_text)
            problems.append(
                f"thread {thread}: differs from the model's text at {at}: shows "
                f"{text[max(0, at - 30) : at + 50]!r}, the model wrote "
                f"{want.model_text[max(0, at - 30) : at + 50]!r} "
                f"({len(text)} vs {len(want.model_text)} chars, {len(messages)} messages)"
                + (f" (note: {last_notes!r})" if last_notes else "")
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


def _first_difference(a: str, b: str) -> int:
    pairs = zip(a, b, strict=False)
    return next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)))


def _clip(text: str, keep: int = 80) -> str:
    return text if len(text) <= 2 * keep else f"{text[:keep]}…{text[-keep:]}"


# ---------------------------------------------------------------------- Discord

DISCORD_NOTES = ("⏹️ Stopped", "⚠️ The reply failed", "⚠️ The reply was interrupted")
MOVED = "-# ↪️ This reply continues here:"
"""An ``/ask`` response whose reply moved to a channel message shows only this."""

ReplyKey = int | str
"""A user message's id (mentions, replies, auto-reply channels) or an ``/ask``
interaction's token: what one reply answers."""


def discord_answer(message: DiscordMessage) -> str:
    """The model text a Discord message shows: content without its state lines (or
    the embed's description), neutralisation undone."""
    if message.embeds:
        text = message.embeds[0].get("description", "")
        text = "" if text == EMPTY_REPLY or text.startswith("*💭") else text
    else:
        lines = message.content.split("\n")
        while lines and lines[-1].startswith("-# "):
            lines.pop()
        text = "\n".join(lines)
    return text.replace(ZWSP, "")


def discord_note(message: DiscordMessage) -> str:
    """The state a message shows: its last ``-#`` line, or the embed's footer."""
    if message.embeds:
        return str((message.embeds[0].get("footer") or {}).get("text", ""))
    last = message.content.rsplit("\n", 1)[-1]
    return last if last.startswith("-# ") else ""


def discord_replies(
    fake: FakeDiscord, expected: Mapping[ReplyKey, Expected]
) -> tuple[dict[ReplyKey, list[DiscordMessage]], list[DiscordMessage]]:
    """The bot's messages grouped by the request they answer, and those that answer
    nothing asked. An ``/ask`` owns its response, its followups and the channel
    messages it moved to; a channel message replying to a user message starts
    that message's reply, and a message replying to nobody continues the reply
    last started in its channel (unambiguous while the replies sharing a channel
    are one message each, or don't overlap in time)."""
    replies: dict[ReplyKey, list[DiscordMessage]] = {}
    owner: dict[int, ReplyKey] = {}
    for token, interaction in fake.interactions.items():
        if interaction.type != INTERACTION_APPLICATION_COMMAND or interaction.original is None:
            continue
        messages = [
            m
            for m in (interaction.original, *interaction.followups)
            if not m.deleted and not m.flags & FLAG_EPHEMERAL
        ]
        if messages:
            replies[token] = messages
            owner.update((m.id, token) for m in messages)
    unasked: list[DiscordMessage] = []
    latest: dict[int, ReplyKey] = {}
    channel_messages = [
        m
        for messages in fake.messages.values()
        for m in messages.values()
        if m.author.id == fake.bot.id and m.webhook_id is None and not m.deleted
    ]
    for message in sorted(channel_messages, key=lambda m: m.id):
        reference = int((message.message_reference or {}).get("message_id") or 0)
        key: ReplyKey | None = None
        if reference in expected:
            key = reference
        elif reference in owner:
            key = owner[reference]  # moved from an /ask response, or a continuation
        elif not reference:
            key = latest.get(message.channel_id)
        if key is None:
            unasked.append(message)
            continue
        replies.setdefault(key, []).append(message)
        owner[message.id] = key
        latest[message.channel_id] = key
    return replies, unasked


def check_discord(
    fake: FakeDiscord,
    expected: Mapping[ReplyKey, Expected],
    *,
    mode: RenderMode = "content",
    injected_429s: bool = True,
) -> list[str]:
    """Violations of the delivery promise on the fake Discord; ``expected`` maps
    each user message id (or ``/ask`` token) to its reply's expected text."""
    problems: list[str] = []
    replies, unasked = discord_replies(fake, expected)
    for key, want in expected.items():
        name = f"reply to {key}" if isinstance(key, int) else "an /ask reply"
        messages = sorted(replies.pop(key, []), key=lambda m: m.id)
        if not messages:
            problems.append(f"{name}: no reply at all")
            continue
        shown = [m for m in messages if not m.content.startswith(MOVED)]
        if not shown:
            problems.append(f"{name}: only a moved note, the reply itself is missing")
            continue
        text = _discord_text([discord_answer(m) for m in shown], want.model_text, mode)
        last_note = discord_note(shown[-1])
        ended_early = any(note in last_note for note in DISCORD_NOTES)
        early_ok = want.may_end_early and ended_early and want.model_text.startswith(text)
        if text != want.model_text and not early_ok:
            problems.append(
                f"{name}: shows {_clip(text)!r}, the model wrote {_clip(want.model_text)!r}"
                + (f" (note: {last_note!r})" if last_note else "")
            )
        elif ended_early and not want.may_end_early:
            problems.append(f"{name}: the whole text, but it says {last_note!r}")
        for message in messages:
            problems += _unfinished(name, message)
        if isinstance(key, int):
            firsts = [m for m in messages if (m.message_reference or {}).get("message_id")]
            if len(firsts) > 1:
                problems.append(f"{name}: {len(firsts)} messages reply to it")
    for key, messages in replies.items():
        problems.append(f"{key}: {len(messages)} bot message(s) for a request not expected")
    for message in unasked:
        problems.append(f"message {message.id}: a bot message nobody asked for")
    for messages in fake.messages.values():
        for message in messages.values():
            if message.author.id == fake.bot.id:
                problems += _pings(fake, message, expected)
    natural = fake.natural_429s()
    if natural:
        problems.append(f"{natural} 429s the test did not inject")
    if not injected_429s and fake.faults.count(kind="429"):
        problems.append("429s were injected where none were expected")
    return problems


def assert_discord(
    fake: FakeDiscord, expected: Mapping[ReplyKey, Expected], *, mode: RenderMode = "content"
) -> None:
    problems = check_discord(fake, expected, mode=mode)
    assert not problems, "delivery promise broken:\n- " + "\n- ".join(problems)


def _discord_text(texts: list[str], model_text: str, mode: RenderMode) -> str:
    """The reply's text back from its messages (fence closers and reopeners of
    page breaks removed, full-width ``＠`` of full pages read as ``@``)."""
    if FULLWIDTH_AT not in model_text:
        texts = [t.replace(FULLWIDTH_AT, "@") for t in texts]
    plain = "".join(texts)
    if len(texts) == 1 or model_text.startswith(plain):
        return plain
    pages = Paginator(message_limit(mode), reserve=16).freeze(model_text, True, 0)
    try:
        return unsplit(texts, pages[: len(texts)])
    except ValueError:
        return plain


def _unfinished(name: str, message: DiscordMessage) -> list[str]:
    problems = []
    if message.components:
        problems.append(f"{name}: message {message.id} still shows Stop")
    if message.flags & FLAG_LOADING:
        problems.append(f'{name}: message {message.id} still shows "thinking…"')
    if WRITING in message.content or WRITING in discord_note(message):
        problems.append(f"{name}: message {message.id} still says it is writing")
    return problems


def _pings(
    fake: FakeDiscord, message: DiscordMessage, expected: Mapping[ReplyKey, Expected]
) -> list[str]:
    """Every send and edit of ``message`` let nobody be pinged, but for the asker
    of a reply to their own message."""
    reference = int((message.message_reference or {}).get("message_id") or 0)
    asker: int | None = None
    if reference in expected:
        asked = next((m for ms in fake.messages.values() if (m := ms.get(reference))), None)
        asker = asked.author.id if asked is not None else None
    problems = []
    for n, revision in enumerate(message.history):
        if revision.kind == "create" and revision.flags & FLAG_LOADING:
            continue  # a deferral: "thinking…", no content to parse
        allowed = revision.allowed_mentions
        where = f"message {message.id} ({revision.kind} {n})"
        if not isinstance(allowed, dict) or allowed.get("parse") != []:
            problems.append(f"{where}: allowed_mentions {allowed!r} lets Discord parse mentions")
            continue
        if allowed.get("users") or allowed.get("roles"):
            problems.append(f"{where}: allowed_mentions names {allowed!r}")
        if allowed.get("replied_user") and asker is None:
            problems.append(f"{where}: pings the author of a message it doesn't answer")
        if revision.mention_everyone or any(m != asker for m in revision.mentions):
            problems.append(f"{where}: pinged {revision.mentions} / everyone")
    if message.mention_roles:
        problems.append(f"message {message.id}: pinged roles {message.mention_roles}")
    return problems
