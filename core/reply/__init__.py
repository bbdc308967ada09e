"""The reply: one model stream turned into platform messages that grow as it
arrives.

``engine`` runs a reply (a reader drains the model, a writer paces, splits,
heals and delivers); ``sink`` is the seam a platform implements; ``budget``
and ``fairness`` decide when a platform call may go out; ``pacing`` how often;
``markdown`` where a page ends and how half-written text is healed;
``holdback`` what an append-only sink may safely send; ``observe`` the stats a
reply reports; ``notes`` the words every platform says a reply's end with.
"""

from core.reply.budget import (
    ONE_OFF,
    Budget,
    Limit,
    LimitTable,
    LocalBudget,
    RateLimit,
    Turn,
    Urgency,
    Window,
    acquire_all,
)
from core.reply.engine import FinalRetry, Reply, ReplyResult
from core.reply.fairness import FairBudget
from core.reply.markdown import Paginator, heal
from core.reply.notes import NOTE, STATE_NOTES, THINKING, done_note, one_line, reasoning_tail
from core.reply.observe import ReplyObserver, ReplyStats
from core.reply.pacing import IMMEDIATE, Pacing
from core.reply.sink import (
    Frame,
    Located,
    MessageGone,
    Outcome,
    OutcomeState,
    Place,
    RateLimited,
    Reroute,
    RouteChoice,
    Sink,
    SinkCall,
    UserStopped,
)

__all__ = [
    "IMMEDIATE",
    "NOTE",
    "ONE_OFF",
    "STATE_NOTES",
    "THINKING",
    "Budget",
    "FairBudget",
    "FinalRetry",
    "Frame",
    "Limit",
    "LimitTable",
    "LocalBudget",
    "Located",
    "MessageGone",
    "Outcome",
    "OutcomeState",
    "Pacing",
    "Paginator",
    "Place",
    "RateLimit",
    "RateLimited",
    "Reply",
    "ReplyObserver",
    "ReplyResult",
    "ReplyStats",
    "Reroute",
    "RouteChoice",
    "Sink",
    "SinkCall",
    "Turn",
    "Urgency",
    "UserStopped",
    "Window",
    "acquire_all",
    "done_note",
    "heal",
    "one_line",
    "reasoning_tail",
]
