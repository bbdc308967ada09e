"""The words every platform uses to say how a reply ended or what the model is
thinking; each adapter's ``format`` only dresses them (punctuation, markup,
its own way of breaking mentions).
"""

from __future__ import annotations

from core.reply.sink import Outcome, OutcomeState

STATE_NOTES: dict[OutcomeState, str] = {
    "stopped": "⏹️ Stopped",
    "failed": "⚠️ The reply failed",
    "interrupted": "⚠️ The reply was interrupted",
}
"""The note under a reply that did not end normally (``done`` has none)."""

NOTE = "ℹ️ Note"
"""Before the reason a reply ended ``done`` with (``the model hit its length limit``)."""

THINKING = "💭"
"""Before the tail of the model's reasoning, while no answer text exists yet."""


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line (runs of whitespace become one space), cut to
    ``limit`` characters with an ellipsis: a reason from a provider may be long
    and span lines, and a note must stay one short line."""
    flat = " ".join(text.split())
    if limit is not None and len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat


def reasoning_tail(reasoning: str, limit: int) -> str:
    """The last ``limit`` characters of the model's reasoning, on one line: the
    newest thought is what tells the user the model is working on it."""
    return " ".join(reasoning.split())[-limit:]


def done_note(outcome: Outcome) -> str | None:
    """``ℹ️ Note: <reason>`` for a reply that ended with a note (length,
    content filter), None for a plain success; no final punctuation."""
    return f"{NOTE}: {outcome.reason}" if outcome.state == "done" and outcome.reason else None
