"""The service: what happens to a message between the platform and the reply.

``intake`` (what became of each message), ``responder`` (one reply to one
message: quota, the conversation lock, context, streaming, storing),
``lifecycle`` (replies in flight, and the drain on shutdown). Which channels
the bot answers, and how, is ``core.rules`` (the operator's configuration,
read by commands that import no Redis).
"""

from core.service.intake import IntakeLog, event_received_at, outcome_metric
from core.service.intake import Outcome as IntakeOutcome
from core.service.lifecycle import ActiveReplies, ShuttingDown
from core.service.responder import ReplyHooks, ReplyRequest, Responder, SinkFactory

__all__ = [
    "ActiveReplies",
    "IntakeLog",
    "IntakeOutcome",
    "ReplyHooks",
    "ReplyRequest",
    "Responder",
    "ShuttingDown",
    "SinkFactory",
    "event_received_at",
    "outcome_metric",
]
