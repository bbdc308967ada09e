"""The console chat at a terminal: prompt-toolkit reads the line, rich shows the reply.

- The line: editing, Up/Down through this session's earlier lines (in memory
  only, like the conversation), Ctrl-C clears it, Ctrl-D on an empty line or
  ``/quit`` leaves.
- The reply: a ``thinking…`` spinner until the first token, reasoning dimmed
  until the answer starts, the answer as Markdown redrawn at the engine's
  pacing (``bots.console.sink``). Ctrl-C stops the reply and keeps what it
  wrote; the chat goes on.

prompt-toolkit reads with the terminal in raw mode, where Ctrl-C is a key, not
a signal; while a reply streams the terminal is back in cooked mode and Ctrl-C
is SIGINT, handled by this chat for the whole session (prompt-toolkit is told
not to install its own handler, which would remove ours when a prompt ends).
"""

from __future__ import annotations

import asyncio
import signal

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from rich.console import Console
from rich.text import Text

from bots.console.conversation import QUIT, RESET, Conversation, outcome_note
from bots.console.sink import LiveSink
from core.config import Settings
from core.llm import LLMClient
from core.reply import Pacing, Reply

LIVE_PACING = Pacing(min_interval=0.08, min_chars=0, max_wait=0.08)
"""About 12 redraws a second: smooth to the eye, and Markdown is parsed and laid
out again on each one, so not per token. Measured from the end of a redraw, so
a long answer that takes longer to lay out is redrawn less often."""

PROMPT = FormattedText([("bold ansicyan", "you> ")])
HELP = (
    "Type a message and press Enter. Ctrl-C stops a reply, /reset forgets the "
    "conversation, /quit or Ctrl-D leaves."
)


class TerminalChat:
    def __init__(
        self,
        settings: Settings,
        model: LLMClient,
        *,
        session: PromptSession[str],
        console: Console,
    ) -> None:
        self._model = model
        self._session = session
        self._console = console
        self._conversation = Conversation(settings.system_prompt)
        self._reply: Reply | None = None

    def interrupt(self) -> None:
        """Ctrl-C while a reply streams: stop it, keeping its text."""
        if self._reply is not None:
            self._reply.stop()

    async def run(self) -> None:
        self._console.print(Text("chatrelay console", style="bold"), Text(f"— {HELP}", style="dim"))
        while True:
            try:
                line = (await self._session.prompt_async(PROMPT, handle_sigint=False)).strip()
            except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line
                continue
            except EOFError:  # Ctrl-D
                return
            if not line:
                continue
            if line in QUIT:
                return
            if line == RESET:
                self._conversation.reset()
                self._console.print(Text("(conversation forgotten)", style="dim"))
                continue
            await self._answer(line)

    async def _answer(self, line: str) -> None:
        sink = LiveSink(self._console)
        self._reply = Reply(sink, pacing=LIVE_PACING)
        try:
            result = await self._reply.run(self._model.stream(self._conversation.ask(line)))
        finally:
            self._reply = None
            sink.close()
        self._conversation.answered(result.text)
        note = outcome_note(result.outcome)
        if note is not None:
            style = "bold red" if result.outcome.state == "failed" else "dim"
            self._console.print(Text(f"[{note}]", style=style))


async def run_terminal(
    settings: Settings,
    model: LLMClient,
    *,
    prompt_input: Input | None = None,
    prompt_output: Output | None = None,
    console: Console | None = None,
) -> None:
    """The terminal chat on this process's terminal (tests pass their own I/O)."""
    session: PromptSession[str] = PromptSession(
        history=InMemoryHistory(), input=prompt_input, output=prompt_output
    )
    chat = TerminalChat(settings, model, session=session, console=console or Console())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, chat.interrupt)
    try:
        await chat.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
