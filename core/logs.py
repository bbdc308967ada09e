"""Logging: JSON lines for production, a reply id that follows a reply across
its platform calls, and secrets that never reach a log line.

The reply id lives in a context variable set when a reply starts; asyncio
copies context into the tasks a reply creates, so every line logged on its
behalf (engine, sink, HTTP client) carries it without passing it around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time

reply_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("reply_id", default=None)

_SECRETS = re.compile(
    r"(xox[abprse]-[A-Za-z0-9-]+"  # Slack bot/user/refresh tokens
    r"|xapp-[A-Za-z0-9-]+"  # Slack app-level tokens
    r"|sk-[A-Za-z0-9_-]{8,}"  # OpenAI-style API keys
    r"|(?:Bearer|Bot)\s+[A-Za-z0-9._~+/-]{8,}=*"  # Authorization header values
    r"|[MN][A-Za-z\d_-]{23,25}\.[A-Za-z\d_-]{6}\.[A-Za-z\d_-]{27,})"  # Discord bot tokens
)


def redact(text: str) -> str:
    """``text`` with anything shaped like a token replaced by ``[redacted]``."""
    return _SECRETS.sub("[redacted]", text)


class RedactingFilter(logging.Filter):
    """Scrubs tokens from every record, whatever library logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class ReplyIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.reply_id = reply_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = getattr(record, "reply_id", None)
        if current:
            entry["reply_id"] = current
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Configure the root logger once, at start."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ReplyIdFilter())
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
