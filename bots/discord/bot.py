"""Transitional: the old intake module, now ``bots.discord.events`` (and
``replies``, ``handover``, ``controls``). Kept only because
``tests/test_import_rules.py`` names it to prove its walk sees the adapters;
remove with that name."""
