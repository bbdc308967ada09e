"""The console chat whose replies stream through the real engine.

It is what ``chatrelay run`` starts when no platform has credentials, so a
fresh checkout can be tried at once. With a terminal on both ends it is the
terminal chat (``bots.console.terminal``: line editing, Markdown, a thinking
spinner); otherwise (questions piped or read from a file, output redirected,
``TERM=dumb``) it is this plain one, which writes text and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TextIO

from bots.console.conversation import QUIT, RESET, Conversation, outcome_note
from bots.console.textsink import TextStreamSink
from core.config import Settings
from core.llm import LLMClient
from core.reply import Pacing, Reply

CONSOLE_PACING = Pacing(min_interval=0.05, min_chars=0, max_wait=0.05)
"""A terminal takes any rate; pacing still coalesces deltas, as on a platform."""

HELP = "Type a message and press Enter. /reset forgets the conversation, /quit leaves."


class ConsoleChat:
    def __init__(
        self,
        settings: Settings,
        model: LLMClient,
        *,
        lines: asyncio.StreamReader,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self._model = model
        self._lines = lines
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._conversation = Conversation(settings.system_prompt)
        self._reply: Reply | None = None

    def interrupt(self) -> None:
        """Ctrl-C: stop the reply that is streaming, if any."""
        if self._reply is not None:
            self._reply.stop()

    async def run(self) -> None:
        self._say(f"chatrelay console — {HELP}\n")
        while True:
            self._say("you> ")
            raw = await self._lines.readline()
            if not raw:
                self._say("\n")
                return
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            if line in QUIT:
                return
            if line == RESET:
                self._conversation.reset()
                self._say("(conversation forgotten)\n")
                continue
            await self._answer(line)

    async def _answer(self, line: str) -> None:
        messages = self._conversation.ask(line)
        self._reply = Reply(
            TextStreamSink(self._out, self._err, prefix="bot> "), pacing=CONSOLE_PACING
        )
        try:
            result = await self._reply.run(self._model.stream(messages))
        finally:
            self._reply = None
        self._conversation.answered(result.text)
        note = outcome_note(result.outcome)
        if note is not None:
            self._say(f"[{note}]\n")

    def _say(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


_feeders: set[asyncio.Task[None]] = set()


async def stdin_reader() -> asyncio.StreamReader:
    """Standard input as an asyncio stream, so reading a line never blocks replies."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (PermissionError, ValueError):
        # A regular file (``run < questions.txt``) can't be polled: read it in a thread.
        feeder = asyncio.create_task(_feed_from_thread(reader))
        _feeders.add(feeder)
        feeder.add_done_callback(_feeders.discard)
    return reader


async def _feed_from_thread(reader: asyncio.StreamReader) -> None:
    while line := await asyncio.to_thread(sys.stdin.buffer.readline):
        reader.feed_data(line)
    reader.feed_eof()


def is_terminal(stdin: TextIO, stdout: TextIO) -> bool:
    """Whether a person types at a terminal and reads one: only then line editing,
    Markdown and ANSI codes; anything redirected gets plain text."""
    if os.environ.get("TERM") == "dumb":  # Emacs shell buffers and the like
        return False
    try:
        return stdin.isatty() and stdout.isatty()
    except (ValueError, AttributeError):  # closed or replaced streams
        return False


async def run_console(settings: Settings, model: LLMClient) -> None:
    if is_terminal(sys.stdin, sys.stdout):
        from bots.console.terminal import run_terminal  # prompt_toolkit and rich: only here

        await run_terminal(settings, model)
        return
    chat = ConsoleChat(settings, model, lines=await stdin_reader())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, chat.interrupt)
    try:
        await chat.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
