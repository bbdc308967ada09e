"""The provider-neutral chat message that dialects translate into their request bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of a conversation.

    ``name`` carries who said it in multi-user threads, so the model can tell
    people apart; dialects without a name field prefix the text instead.
    """

    role: Role
    content: str
    name: str | None = None
