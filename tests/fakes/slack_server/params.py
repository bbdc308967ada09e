"""Reading a Web API call: its token and arguments (query string, JSON or form body,
as Slack accepts either), and ``SlackError``, how a method refuses them."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

JSON = dict[str, Any]


class SlackError(Exception):
    """Raised by a method handler: becomes ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra


def bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[len("bearer ") :].strip() or None
    return None


async def read_params(request: web.Request) -> tuple[JSON, str]:
    """Query string, then the body (JSON or form) on top, as Slack accepts either."""
    params: JSON = dict(request.query)
    content_type = request.content_type if request.can_read_body else ""
    if content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            params.update(body)
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            params[key] = value if isinstance(value, str) else "(file)"
    elif request.can_read_body:
        await request.read()
    return params, content_type


def opt_str(p: JSON, key: str) -> str | None:
    value = p.get(key)
    if value is None or value == "":
        return None
    return str(value)


def need(p: JSON, key: str, error: str) -> str:
    value = opt_str(p, key)
    if value is None:
        raise SlackError(error)
    return value


def int_param(p: JSON, key: str, default: int) -> int:
    value = p.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SlackError("invalid_arguments") from None


def json_param(p: JSON, key: str) -> Any:
    """A structured argument: JSON bodies carry it as is, form bodies as a JSON string."""
    value = p.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackError("invalid_arguments") from None
    return value
