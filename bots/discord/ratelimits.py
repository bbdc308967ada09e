"""Transitional: the old home of Discord's scopes and the rate-limit learner,
now ``bots.discord.limits``. Kept only for importers outside the adapter
(``bench/production.py``, ``tests/test_cli_limits.py``, ``tests/test_logs.py``,
``tests/test_metrics.py``); remove once they import from ``limits``."""

from bots.discord.limits import (
    GLOBAL_SCOPE,
    RateLimitLearner,
    channel_scope,
    interaction_scope,
    route_name,
    route_template,
    token_digest,
)

__all__ = [
    "GLOBAL_SCOPE",
    "RateLimitLearner",
    "channel_scope",
    "interaction_scope",
    "route_name",
    "route_template",
    "token_digest",
]
