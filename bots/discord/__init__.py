"""The Discord adapter, room by room (every adapter has the same rooms).

``settings`` (environment), ``limits`` (default budget limits, the scopes of
Discord's calls, learning limits from its headers, the invalid-request
guard), ``service`` (``DiscordPlatform``: connect, intake on/off, shutdown,
the orphan sweeper, the hand-over pickup, catching up after a restart),
``events`` (which messages deserve a reply: filters, allow/block lists,
permissions, the intake policy's verdict, cursors), ``conversations`` (reply
chains, threads, DMs; reading one back), ``replies`` (starting a reply: where
it goes, its sink, ``Responder.answer`` with Discord's pacing, draining),
``handover`` (a message handed over to the next process: its payload, and
answering it), ``sink`` (a reply as growing messages), ``api`` (the client,
channel and interaction outlets, Discord's errors as the engine's), ``format``
(content or embeds, states, neutralised mentions, the Stop button),
``controls`` (Stop, ``/ask``, ``/reset``, ``/model``), ``finalise`` (ending
replies another process left), ``preflight`` (``chatrelay check``).
"""
