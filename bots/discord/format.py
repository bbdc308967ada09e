"""What one message of a reply looks like on Discord, streaming or finished.

Two renderings, chosen by ``DISCORD_RENDER``:

- ``content``: the model's Markdown as the message content (Discord renders
  Markdown natively), up to 2000 characters, with the reply's state on a small
  ``-#`` subtext line under it: "writing…" while it streams, then nothing (done),
  "Stopped", or the failure and its reason.
- ``embeds``: the text as an embed description (up to 4096), the state in the
  footer and the colour. Longer pages, and mentions in embeds never notify.

The words of the states are every platform's (``core.reply.notes``); this
module dresses them: a ``-#`` line or a footer, a full stop, neutralised.

Model output must never notify anyone: ``allowed_mentions`` (set on every send
and edit, ``bots.discord.api``) is what guarantees that; ``neutralise`` also
breaks the mention syntax so ``@everyone`` or ``<@&role>`` shows as text, not
as a highlighted mention that looks like a ping.

The message being written carries a Stop button (``stop_view``); its
``custom_id`` is read back by ``bots.discord.controls``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import discord

from core.reply import NOTE, STATE_NOTES, THINKING, Outcome, one_line, reasoning_tail

RenderMode = Literal["content", "embeds"]

ZWSP = "\u200b"
FULLWIDTH_AT = "\uff20"
_MENTION = re.compile(r"@(?=everyone|here)|(?<=<)@(?=[!&]?\d)")

MAX_CONTENT = 2000
MAX_EMBED_DESCRIPTION = 4096
DECORATION_ROOM = 200
"""Characters kept free in content mode for the state line under the text."""
REASON_MAX = 150
"""A failure's reason is cut to this, so the state line always fits its room."""
REASONING_PREVIEW = 180
"""Characters of the model's reasoning shown while no answer text exists yet."""

COLOURS = {
    "streaming": 0x5865F2,
    "done": 0x57F287,
    "stopped": 0x99AAB5,
    "failed": 0xED4245,
    "interrupted": 0xED4245,
}
WRITING = "✍️ writing…"
EMPTY_REPLY = "(the model returned no text)"


@dataclass(frozen=True, slots=True)
class Rendered:
    """The visible parts of a message: content and/or one embed."""

    content: str | None
    embed: discord.Embed | None


def message_limit(mode: RenderMode) -> int:
    """The most model text one message carries (what the sink declares to the engine)."""
    return MAX_EMBED_DESCRIPTION if mode == "embeds" else MAX_CONTENT - DECORATION_ROOM


def neutralise(text: str, room: int | None = None) -> str:
    """``text`` unable to mention anyone: a zero-width space after the ``@`` of
    ``@everyone``, ``@here``, ``<@user>``, ``<@!user>`` and ``<@&role>``.

    That makes the text longer, and a page is already as long as a message may
    be; when the result would not fit in ``room``, the ``@`` is replaced by a
    full-width ``＠`` instead, which keeps the length (and still reads as an at).
    """
    if "@" not in text:
        return text
    spaced = _MENTION.sub("@" + ZWSP, text)
    if room is None or len(spaced) <= room:
        return spaced
    return _MENTION.sub(FULLWIDTH_AT, text)


def strip_mention(content: str, bot_id: int) -> str:
    """The user's words without the mention that summoned the bot."""
    return re.sub(rf"<@!?{bot_id}>", "", content).strip()


def outcome_note(outcome: Outcome | None, streaming: bool) -> str | None:
    """One short line for the reply's state, or None for a plain success."""
    if streaming:
        return WRITING
    if outcome is None:
        return None
    reason = neutralise(one_line(outcome.reason or "", REASON_MAX))
    if outcome.state == "done":
        return f"{NOTE}: {reason}." if reason else None
    note = STATE_NOTES[outcome.state]
    said = note.split(" ", 1)[1]  # "The reply was interrupted"
    if reason.lower().startswith(said.lower()):  # a reason that repeats the note
        reason = reason[len(said) :].lstrip(" :").strip()
    if not reason:
        return note
    return f"{note} {reason}" if reason.startswith("by ") else f"{note}: {reason}"


def reasoning_preview(reasoning: str) -> str:
    """The tail of the model's reasoning, on one line, for before the answer starts."""
    tail = reasoning_tail(reasoning, REASONING_PREVIEW)
    return f"{THINKING} {neutralise(tail)}" if tail else f"{THINKING} thinking…"


def render(
    text: str,
    *,
    mode: RenderMode,
    streaming: bool,
    outcome: Outcome | None = None,
    reasoning: str = "",
) -> Rendered:
    """One message: ``text`` is a page of the model's answer (healed while streaming),
    ``outcome`` set only on the reply's last message when it ends."""
    note = outcome_note(outcome, streaming)
    body = neutralise(text, message_limit(mode)) if text.strip() else ""
    if mode == "embeds":
        return _embed(body, note, streaming, outcome, reasoning)
    lines = []
    if body:
        lines.append(body)
    elif streaming:
        lines.append(f"-# {reasoning_preview(reasoning)}")
    elif note is None:
        lines.append(f"-# {EMPTY_REPLY}")
    if note is not None:
        lines.append(f"-# {note}")
    return Rendered("\n".join(lines), None)


def _embed(
    body: str, note: str | None, streaming: bool, outcome: Outcome | None, reasoning: str
) -> Rendered:
    state = "streaming" if streaming else outcome.state if outcome else "done"
    description = body
    if not body:
        description = f"*{reasoning_preview(reasoning)}*" if streaming else EMPTY_REPLY
    embed = discord.Embed(description=description, colour=COLOURS[state])
    if note is not None:
        embed.set_footer(text=note)
    return Rendered(None, embed)


ANSWERING_AGAIN = "🔄 Interrupted before the answer began: answering again…"
RESTARTING_TEXT = "I'm restarting — please ask again in a minute."
"""Said to a message or ``/ask`` that can be neither answered nor handed over."""


def answering_again_note() -> Rendered:
    """What an ``/ask`` response shows between its process dying before the
    answer's first words and the next process answering in it (it replaces
    "thinking…", which must not stay if the hand-over never arrives)."""
    return Rendered(f"-# {ANSWERING_AGAIN}", None)


def moved_note(jump_url: str) -> Rendered:
    """What an ``/ask`` response shows once its reply moved to a channel message."""
    return Rendered(f"-# ↪️ This reply continues here: {jump_url}", None)


def answer_of(message: discord.Message) -> str:
    """The model text one of our messages shows, without the state line: how a
    reply chain is read back when its conversation is no longer in memory."""
    if message.embeds:
        text = message.embeds[0].description or ""
        return "" if text == EMPTY_REPLY or text.startswith(f"*{THINKING}") else text
    lines = message.content.split("\n")
    while lines and lines[-1].startswith("-# "):
        lines.pop()
    return "\n".join(lines).replace(ZWSP, "")


# -- the Stop button -----------------------------------------------------------

STOP_PREFIX = "chatrelay:stop:"


def stop_custom_id(reply_id: str, asker: int) -> str:
    """Everything a press needs (the reply's id and who asked), so whichever
    process receives it can act on it (``bots.discord.controls.parse_stop``)."""
    return f"{STOP_PREFIX}{reply_id}:{asker}"


def stop_view(reply_id: str, asker: int) -> discord.ui.View:
    """A view that only carries the button to Discord.

    It is stopped before it is sent: discord.py keeps live views in memory to
    route presses to them, and one per streamed message would pile up forever.
    Presses are handled from the ``custom_id`` instead (``bots.discord.controls``).
    """
    view = discord.ui.View(timeout=None)
    view.add_item(
        discord.ui.Button(
            label="Stop",
            emoji="⏹️",
            style=discord.ButtonStyle.secondary,
            custom_id=stop_custom_id(reply_id, asker),
        )
    )
    view.stop()
    return view
