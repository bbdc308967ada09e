"""Transitional: the old home of the outlets, now ``bots.discord.api``. Kept only
for ``bench/pacing.py``; remove once it imports from ``api``."""

from bots.discord.api import ChannelOutlet

__all__ = ["ChannelOutlet"]
