"""REST routes: their templates and matching, what a handler gets of a request, and
the route keys ``FakeDiscord.faults`` uses."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discord_server.constants import Json
from tests.fakes.discord_server.validation import ApiError

# Route keys for ``FakeDiscord.faults`` ("<HTTP method> <route template>").
SEND_MESSAGE = "POST channels/{channel_id}/messages"
EDIT_MESSAGE = "PATCH channels/{channel_id}/messages/{message_id}"
DELETE_MESSAGE = "DELETE channels/{channel_id}/messages/{message_id}"
INTERACTION_CALLBACK = "POST interactions/{interaction_id}/{interaction_token}/callback"
FOLLOWUP = "POST webhooks/{webhook_id}/{webhook_token}"
EDIT_INTERACTION_MESSAGE = "PATCH webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"
"""Edits of ``@original`` and of followups alike; Discord's own spelling,
``"PATCH /webhooks/{application.id}/{interaction.token}/messages/@original"``, narrows
a fault to ``@original``."""


@dataclass
class Route:
    method: str
    template: str
    handler: Callable[[Request], Awaitable[tuple[int, Any]]]
    kind: str = "default"
    """``default``, ``message_create``, ``message_edit``, ``webhook``, ``callback``."""
    auth: bool = True
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        self.pattern = re.compile(regex + "$")


@dataclass
class Request:
    params: dict[str, str]
    body: Any
    query: dict[str, str]
    files: list[Json]
    now: float
    path: str

    def id(self, name: str) -> int:
        try:
            return int(self.params[name])
        except ValueError:
            raise ApiError(404, 0, "404: Not Found") from None


class Dropped(Exception):
    """A ``drop`` fault: the call gets no answer, its connection closes."""
