"""How much of a delta an append-only sink may take now.

An append-only platform (Slack's streaming API, a terminal) can't take text
back. A sink neutralises mentions in each delta it appends, so a mention must
never be split across two appends: ``<!chan`` now and ``nel>`` later would be
two harmless pieces on our side and one ``<!channel>`` on the platform's. So
the engine holds back a tail that could still become a mention (a ``<`` or
``@`` near the end with no space or ``>`` after it) until the next delta
shows what it is, and commits only what the platform confirmed. Holding back
is the engine's job, not the sink's: a sink that kept the tail itself would
lose it when the call failed and the engine resent the frame.
"""

from __future__ import annotations

HOLD_BACK = 32
"""How far from the end a mention may still be growing: longer than any mention
start that neutralising looks for (``<!`` plus a word, ``@everyone``); a
longer unbroken tail is sent, since its ``<@`` or ``@word`` is already whole."""

_BREAKS = frozenset(" \t\r\n>")


def appendable(pending: str, final: bool) -> int:
    """How many leading characters of ``pending`` may be appended now.

    Everything on the final frame; otherwise all but the unbroken tail (no
    whitespace or ``>``, at most ``HOLD_BACK`` characters) from its first ``<``
    or ``@`` on."""
    if final or not pending:
        return len(pending)
    # The unbroken tail: back from the end to the last break, at most HOLD_BACK.
    start = len(pending)
    floor = max(0, len(pending) - HOLD_BACK)
    while start > floor and pending[start - 1] not in _BREAKS:
        start -= 1
    # Hold from its first '<' or '@': "<@U1" must not go out as "<" then "@U1".
    for i in range(start, len(pending)):
        if pending[i] in "<@":
            return i
    return len(pending)
