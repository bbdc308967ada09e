"""The model's stream: ``sse`` decodes the bytes, a dialect (``chat``,
``anthropic``, ``responses``) turns them into ``events``, and ``client``
(``LLMClient``) owns HTTP, retries and the fallback chain; ``model`` opens the
configured one (or the built-in demo)."""

from core.llm.client import LLMClient
from core.llm.events import (
    Event,
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from core.llm.messages import ChatMessage
from core.llm.provider import Provider

__all__ = [
    "ChatMessage",
    "Event",
    "Finish",
    "LLMClient",
    "Provider",
    "ReasoningDelta",
    "StreamError",
    "TextDelta",
    "ToolCallDelta",
    "Usage",
]
