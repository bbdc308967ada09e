"""One place to send a model request: where, which model, which wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Provider:
    base_url: str
    """With the API version, e.g. ``https://api.z.ai/api/paas/v4``; the dialect adds the path."""
    model: str
    api: str = "chat"
    """``chat``, ``anthropic`` or ``responses``."""
    api_key: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    extra_body: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How logs and error messages name it: host and model, never the key."""
        host = self.base_url.split("://", 1)[-1].split("/", 1)[0]
        return f"{self.model}@{host}"
