"""Everything replicas share, in Redis.

``connection`` (a Redis URL, or an embedded redis-server), ``keys`` (names,
all under one prefix), ``conversations`` (turns and the model's context),
``buckets`` (the shared rate budget), ``dedupe`` (one reply per event),
``locks`` (one reply per conversation), ``cancel`` (Stop from any replica),
``inflight`` (finishing a dead replica's replies), ``usage`` (tokens and
quotas), ``handoff`` (a human agent took a thread over), ``settings``;
``store`` opens them all together.
"""
