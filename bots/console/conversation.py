"""What one console session has said so far, shared by the plain and the terminal chat.

A terminal session belongs to one person and ends with the process, so the
conversation lives in memory only.
"""

from __future__ import annotations

from core.llm import ChatMessage
from core.reply import Outcome

QUIT = ("/quit", "/exit")
RESET = "/reset"


class Conversation:
    def __init__(self, system_prompt: str) -> None:
        self._system_prompt = system_prompt
        self._history: list[ChatMessage] = []

    def ask(self, line: str) -> list[ChatMessage]:
        """Remember the user's line; the messages to send the model for it."""
        self._history.append(ChatMessage("user", line))
        return [ChatMessage("system", self._system_prompt), *self._history]

    def answered(self, text: str) -> None:
        """Remember what the model answered (a stopped reply's partial text too)."""
        if text:
            self._history.append(ChatMessage("assistant", text))

    def reset(self) -> None:
        self._history.clear()


def outcome_note(outcome: Outcome) -> str | None:
    """The word a chat adds after a reply that did not simply end, or None."""
    if outcome.state == "failed":
        return f"reply failed: {outcome.reason}"
    if outcome.state != "done":
        return outcome.state
    if outcome.reason:
        return f"note: {outcome.reason}"
    return None
