"""What an operator sees: ``logs`` (JSON or text lines, every credential
redacted, a reply's context on each line), ``metrics`` (Prometheus),
``tracing`` (OpenTelemetry, one trace per reply).

Only the logs are re-exported here: ``chatrelay ask`` logs but neither serves
metrics nor traces, and must not pay for importing them.
"""

from core.telemetry.logs import ReplyContext, redact, reply_scope, setup_logging

__all__ = ["ReplyContext", "redact", "reply_scope", "setup_logging"]
