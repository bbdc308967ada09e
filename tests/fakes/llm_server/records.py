"""What the fake LLM server records of each request, and how its response ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["pending", "completed", "client_disconnected", "cut", "stopped"]


@dataclass
class RecordedRequest:
    method: str
    path: str
    """As sent, e.g. ``/v1/chat/completions``."""
    route: str
    """Without the API prefix, e.g. ``chat/completions``; the key ``enqueue`` uses."""
    query: str
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with ``", "``."""
    body: bytes
    json: Any
    """The parsed body, or None when it is not JSON."""
    time: float
    """``time.monotonic()`` when the request arrived."""
    outcome: Outcome = "pending"
    ended_at: float | None = None
    """``time.monotonic()`` when the response ended, however it ended."""
    text: str | None = None
    """The full reply the model wrote in the response served (``FakeResponse.text``):
    what the platform should show in the end. None when the response didn't say."""
