"""The seam between the engine and a platform: what a reply looks like there.

The engine decides *when* and *how much* (pacing, splitting, healing, never
losing text); a sink decides *how it looks and which API call it takes*
(payload shape, mrkdwn or embeds, buttons, the "streaming" indicator). One
reply gets one sink instance, which may own several platform messages: the
engine numbers them with ``Frame.index`` and moves to the next one only after
the previous one got its final text.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

OutcomeState = Literal["done", "stopped", "failed", "interrupted"]

Place = Mapping[str, str]
"""Where one message of a reply is on its platform (its ids, as strings): what a
finaliser in another process needs to end it (``core.state.inflight``)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a reply ended. ``reason`` is short and human-readable, for the sink to show
    (e.g. "the model provider returned an error: overloaded"); it may also be set
    on ``done`` for a note such as "the model hit its length limit"."""

    state: OutcomeState
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """What message ``index`` of a reply should show now.

    ``text`` is the whole message, healed on intermediate frames so half-written
    markdown renders sanely; sinks that replace a message's content use it.
    ``delta`` is what arrived since the previous frame of this message, never
    healed; append-only sinks (native streaming, a terminal) use it instead.
    ``final`` means this message will not change again.
    """

    index: int
    text: str
    delta: str
    final: bool
    reasoning: str = ""
    sent: int = 0
    """Characters of ``text`` the platform already confirmed for this message
    (append-only sinks): once this frame succeeds the message shows
    ``text[:sent] + delta``. A sink that must replace the content instead (a
    stream the platform closed) shows ``text``."""

    @property
    def visible(self) -> str:
        """What the message shows once this frame is confirmed, on an append-only
        sink (replace-style sinks show ``text``): ``text[:sent] + delta``.

        The engine's frames hold ``delta`` in ``text`` at ``sent`` (it is the text
        after ``sent``, minus any held-back tail), so this costs a comparison of
        ``delta``, not a copy of the whole message per delivery (which made a long
        reply quadratic); other frames get the concatenation."""
        text = self.text
        sent = self.sent
        delta = self.delta
        if sent >= 0 and text.startswith(delta, sent):
            end = sent + len(delta)
            return text if end == len(text) else text[:end]
        return text[:sent] + delta


class SinkCall(enum.Enum):
    """The kinds of platform call a sink makes, so it can name their rate scopes."""

    OPEN = "open"  # show that a reply is coming (placeholder, status, defer)
    CREATE = "create"  # the first frame of a message: posts it
    UPDATE = "update"  # a later frame of the same message: edits or appends
    CLOSE = "close"  # the final frame of a message that is not the reply's last
    FINISH = "finish"  # the last frame of the reply, with its outcome


class RateLimited(Exception):
    """The platform answered 429. The engine blocks the scope and retries the call."""

    def __init__(self, retry_after: float, scope: str | None = None) -> None:
        super().__init__(f"rate limited for {retry_after:.2f}s" + (f" on {scope}" if scope else ""))
        self.retry_after = retry_after
        self.scope = scope


class Reroute(Exception):
    """The platform said this call must take another route (its stream was closed,
    the workspace has no streaming API) and the sink switched to it. Nothing was
    shown: the engine asks the sink's scopes again and resends the same frame."""


class UserStopped(Exception):
    """The platform said the user stopped the reply with its own control (Slack's
    Stop on a streamed message). Nothing was shown: the engine stops the reply
    and delivers its final frame, which the sink shows the way that is still
    possible."""


class MessageGone(Exception):
    """The message or interaction can no longer be written (deleted, 404, expired).

    The engine stops writing to the reply and stops the model stream."""


class Sink(Protocol):
    @property
    def limit(self) -> int:
        """The longest text one message may show, in the platform's measure, after
        the sink's own decorations are accounted for."""
        ...

    @property
    def append_only(self) -> bool:
        """True when the platform appends deltas natively (Slack's streaming API, a
        terminal): the engine then never heals, since appended text can't be undone."""
        ...

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        """The budget scopes a call consumes, e.g. ``("slack:T1:chat.update",)``:
        one per platform call it will make (a roll-over that stops one stream
        and starts the next names both). The engine acquires them; a sink never
        spends budget itself, and after ``Reroute`` it names the new route's."""
        ...

    async def open(self) -> None:
        """Show that a reply is coming before the model's first token."""
        ...

    async def render(self, frame: Frame) -> None:
        """Create (new ``index``) or update a message; ``frame.final`` closes it
        (the reply continues in the next one). Raising leaves the sink as it was:
        it changes its own state only after the platform confirmed a call."""
        ...

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        """Give the last message its final text and the reply its final state
        (remove the stop button, show "stopped" or the error)."""
        ...


@runtime_checkable
class RouteChoice(Protocol):
    """A sink with two ways to create a message: a preferred one whose budget is
    scarce (Slack's native stream: 20 starts a minute per workspace) and a
    plentiful one (a posted message, then edits). The engine takes the
    preferred route only when its scarce slot is free *now*, so no reply's
    first text queues behind other replies' starts."""

    def contested_scope(self, call: SinkCall, index: int) -> str | None:
        """The scarce scope ``call`` would spend on the preferred route, or None
        when this call has no choice to make."""
        ...

    def fall_back(self) -> None:
        """Take the plentiful route for this reply from now on (its ``scopes``
        and ``append_only`` then say so)."""
        ...


@runtime_checkable
class Located(Protocol):
    """A sink whose messages another process may have to finish (every platform
    sink; not a terminal). The engine asks after each call and reports the
    answer with the text it confirmed, so a sink never calls back into the
    reply's bookkeeping."""

    def place(self, index: int) -> Place | None:
        """Where message ``index`` is now, or None while it does not exist. Pure:
        it reads what the platform already confirmed."""
        ...
