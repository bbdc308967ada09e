"""Everything replicas share, in Redis.

``topology`` (one server, a Redis Cluster or a Sentinel-managed master) and
``connection`` (their clients, or an embedded redis-server), ``keys`` (names,
all under one prefix, hash-tagged on a cluster), ``replicated`` (writes that
wait for a replica, so a failover can't forget them), ``conversations``
(turns and the model's context),
``buckets`` (the shared rate budget), ``dedupe`` (one reply per event),
``locks`` (one reply per conversation), ``cancel`` (Stop from any replica),
``inflight`` (finishing a dead replica's replies), ``usage`` (tokens and
quotas), ``handoff`` (a human agent took a thread over), ``chains`` (reply
chains), ``lastseen`` (catch-up cursors), ``resets`` (``/reset`` marks),
``choices`` (a channel's model), ``greetings`` (greeted users), ``features``
(features a workspace lacks), ``learned`` and ``invalid`` (a platform's learnt
limits and invalid requests), ``settings``; ``store`` opens them all together
as one ``State``. Nothing outside this package talks to Redis.
"""

from core.state.connection import REDIS_FAILURES, bounded
from core.state.conversations import Turn
from core.state.deferred import DeferredRequest
from core.state.inflight import InflightRecord
from core.state.keys import ConversationKey
from core.state.store import State, open_state

__all__ = [
    "REDIS_FAILURES",
    "ConversationKey",
    "DeferredRequest",
    "InflightRecord",
    "State",
    "Turn",
    "bounded",
    "open_state",
]
