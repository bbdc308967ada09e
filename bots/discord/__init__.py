"""The Discord adapter.

``settings`` (environment), ``client`` (discord.py client: addresses, intents,
shards), ``service`` (start, connect, sync, orphan finaliser), ``bot`` (which
events get a reply, in which conversation), ``commands`` (``/ask``, ``/reset``,
``/model``), ``conversations`` (reply chains, threads, DMs), ``access``
(allow/block lists), ``permissions`` (may the bot write here), ``models``
(``/model`` choices), ``sink`` (a reply as growing messages), ``outlets``
(channel messages vs. interaction webhooks), ``format`` (content or embeds,
states, neutralised mentions), ``controls`` (the Stop button), ``ratelimits``
(budget scopes, learning from Discord's headers).
"""
