"""Transitional: the old intake module, now ``bots.slack.events`` (and
``replies``, ``handover``, ``controls``, ``conversations``). Kept, empty, only
because ``tests/test_import_rules.py`` names ``bots.slack.bot`` to prove its
walk sees the adapters; remove it with that name."""
