"""The service: what happens to a message between the platform and the reply.

``policy`` (which messages get a reply: dedupe, human handoff, request
defaults), ``history`` (recalling a conversation from the platform),
``responder`` (one reply to one message: quota, the conversation lock,
context, streaming, storing, handing over when draining), ``intake`` (what
became of each message), ``lifecycle`` (replies in flight, and the drain on
shutdown), ``platform`` (what an adapter is to the process that runs it).
Which channels the bot answers, and how, is ``core.rules`` (the operator's
configuration, read by commands that import no Redis).
"""

from core.service.history import Fetch, recall, remembers, store_recalled
from core.service.intake import IntakeLog, event_received_at, outcome_metric
from core.service.intake import Outcome as IntakeOutcome
from core.service.lifecycle import ActiveReplies, ShuttingDown
from core.service.platform import Platform, Routes, Service, Services
from core.service.policy import BACK_TEXT, Incoming, IntakePolicy, Verdict
from core.service.responder import ReplyRequest, Responder, SinkFactory

__all__ = [
    "BACK_TEXT",
    "ActiveReplies",
    "Fetch",
    "Incoming",
    "IntakeLog",
    "IntakeOutcome",
    "IntakePolicy",
    "Platform",
    "ReplyRequest",
    "Responder",
    "Routes",
    "Service",
    "Services",
    "ShuttingDown",
    "SinkFactory",
    "Verdict",
    "event_received_at",
    "outcome_metric",
    "recall",
    "remembers",
    "store_recalled",
]
