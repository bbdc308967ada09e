"""``chatrelay ask``: one prompt, one reply streamed to stdout, an honest exit code.

It runs the same engine as the chat platforms (with a terminal sink), so it is
also the quickest way to check a provider configuration end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import TextIO

from bots.console.textsink import TextStreamSink
from core.config import Settings
from core.llm import ChatMessage
from core.llm.model import open_model
from core.reply import IMMEDIATE, Reply

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_STOPPED = 130


async def ask(
    settings: Settings,
    prompt: str,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Stream the answer to ``out`` (reasoning to ``err``); return the exit code.

    On failure the text already printed stays printed and one line on ``err``
    says what went wrong."""
    out = out or sys.stdout
    err = err or sys.stderr
    messages = [ChatMessage("system", settings.system_prompt), ChatMessage("user", prompt)]
    async with open_model(settings) as model:
        reply = Reply(TextStreamSink(out, err), pacing=IMMEDIATE)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(RuntimeError):  # not the main thread: no signals
            loop.add_signal_handler(signal.SIGINT, reply.stop)
        try:
            result = await reply.run(model.stream(messages))
        finally:
            with contextlib.suppress(RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
    outcome = result.outcome
    if outcome.state == "done":
        if outcome.reason:
            err.write(f"chatrelay: note: {outcome.reason}\n")
        return EXIT_OK
    if outcome.state in ("stopped", "interrupted"):
        err.write("chatrelay: stopped\n")
        return EXIT_STOPPED
    err.write(f"chatrelay: error: {outcome.reason or 'the reply failed'}\n")
    return EXIT_FAILED
