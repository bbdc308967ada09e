"""The console chat at a terminal, driven the way a person drives it.

Keys go in through prompt-toolkit's pipe input (its screen is a ``DummyOutput``);
replies come out of a rich console that believes it writes to a terminal, into
a buffer replayed by a small screen model (``Screen``), so a test asserts on
what the terminal shows *now* (a spinner that was erased is gone), and reads
the raw ANSI codes for styles. Replies stream through the real engine from the
fake LLM server; every wait is on a write to the screen or a server event,
with a bounded timeout.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from bots.console.chat import is_terminal
from bots.console.terminal import run_terminal
from bots.console.view import THINKING
from core.config import Settings
from core.llm.client import LLMClient
from tests.fakes.llm_server import FakeLLMServer, sse_response
from tests.fakes.streams import chat_stream

WIDTH, HEIGHT = 80, 24
UP, CTRL_C, CTRL_D = "\x1b[A", "\x03", "\x04"
CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")
SGR = re.compile(r"\x1b\[([0-9;]*)m")


class Screen(io.StringIO):
    """What rich writes, and a wake-up for whoever waits on the next write."""

    def __init__(self) -> None:
        super().__init__()
        self._written = asyncio.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        self._written.set()
        return written

    def lines(self) -> list[str]:
        """The screen now: the raw output replayed (text, CR, LF, cursor moves, erases)."""
        lines, row, col = [""], 0, 0
        raw, pos = self.getvalue(), 0
        while pos < len(raw):
            if code := CSI.match(raw, pos):
                params, command = code.groups()
                count = int(params) if params.isdigit() else 1
                if command == "A":
                    row = max(0, row - count)
                elif command == "C":
                    col += count
                elif command == "D":
                    col = max(0, col - count)
                elif command == "J":  # erase below
                    del lines[row + 1 :]
                    lines[row] = lines[row][:col]
                elif command == "K":
                    lines[row] = "" if params == "2" else lines[row][:col]
                pos = code.end()
                continue
            char, pos = raw[pos], pos + 1
            if char == "\r":
                col = 0
            elif char == "\n":
                row, col = row + 1, 0
                lines.extend([""] * (row + 1 - len(lines)))
            else:
                line = lines[row].ljust(col)
                lines[row] = line[:col] + char + line[col + 1 :]
                col += 1
        return [line.rstrip() for line in lines]

    def text(self) -> str:
        return "\n".join(self.lines())

    async def wait(self, ready: Callable[[str], bool], timeout: float = 5.0) -> str:  # noqa: ASYNC109
        """The screen's text once ``ready`` says so; TimeoutError (with the screen) otherwise."""
        try:
            async with asyncio.timeout(timeout):
                while not ready(self.text()):
                    self._written.clear()
                    await self._written.wait()
        except TimeoutError:
            raise TimeoutError(f"the screen never got there:\n{self.text()}") from None
        return self.text()

    def style_of(self, text: str) -> set[str]:
        """The SGR parameters in force where ``text`` was last written."""
        raw = self.getvalue()
        at = raw.rindex(text)
        codes = SGR.findall(raw, 0, at)
        return set(codes[-1].split(";")) if codes else set()


class TerminalUnderTest:
    """A running terminal chat: keys in, screen out."""

    def __init__(self, keys: PipeInput, screen: Screen, task: asyncio.Task[None]) -> None:
        self.keys = keys
        self.screen = screen
        self.task = task

    def type(self, text: str) -> None:
        self.keys.send_text(text)

    async def ask(self, question: str, server: FakeLLMServer, count: int) -> None:
        """Type ``question`` and Enter; return once the server has the ``count``-th request."""
        self.type(question + "\r")
        await server.wait_requests(count, timeout=5)


@contextmanager
def keyboard() -> Iterator[PipeInput]:
    with create_pipe_input() as keys:
        yield keys


async def chat_until_it_ends(
    llm: LLMClient, keys: PipeInput, console: Console, settings: Settings
) -> None:
    """``run_terminal``; a KeyboardInterrupt escaping it (Ctrl-C at the prompt not
    handled) fails the test instead of ending the test run."""
    try:
        await run_terminal(
            settings, llm, prompt_input=keys, prompt_output=DummyOutput(), console=console
        )
    except KeyboardInterrupt as exc:
        raise AssertionError("a KeyboardInterrupt escaped the terminal chat") from exc


@asynccontextmanager
async def terminal_chat(llm: LLMClient) -> AsyncIterator[TerminalUnderTest]:
    screen = Screen()
    console = Console(
        file=screen, force_terminal=True, width=WIDTH, height=HEIGHT, color_system="standard"
    )
    settings = Settings(_env_file=None, system_prompt="Be brief.")  # type: ignore[call-arg]
    with keyboard() as keys:
        task = asyncio.create_task(chat_until_it_ends(llm, keys, console, settings))
        chat = TerminalUnderTest(keys, screen, task)
        try:
            await screen.wait(lambda text: "chatrelay console" in text)
            yield chat
            chat.type(CTRL_D)
            async with asyncio.timeout(5):
                await task
        finally:
            task.cancel()


def ctrl_c() -> None:
    """Ctrl-C while a reply streams: the terminal is in cooked mode, so the
    process gets SIGINT. Someone other than Python's default handler must take
    it (a prompt-toolkit prompt that removed the chat's handler would turn it
    into a KeyboardInterrupt that ends the chat, and this test run)."""
    assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    os.kill(os.getpid(), signal.SIGINT)


def last_user_line(server: FakeLLMServer, index: int) -> str:
    messages = server.requests[index].json["messages"]
    content: str = [m for m in messages if m["role"] == "user"][-1]["content"]
    return content


async def test_a_question_gets_a_markdown_answer(llm_server: FakeLLMServer, llm: LLMClient) -> None:
    answer = ["# Plan\n\n", "Use **bold** moves", " and `code`.\n\n", "- one\n", "- two\n"]
    llm_server.enqueue(sse_response(chat_stream(answer)))
    async with terminal_chat(llm) as chat:
        await chat.ask("what now?", llm_server, 1)
        text = await chat.screen.wait(lambda text: "• two" in text)
        assert "• one" in text
        assert "Use bold moves and code." in text  # the markup is rendered, not shown
        assert "**" not in text and "`" not in text and "# Plan" not in text
        assert "1" in chat.screen.style_of("bold")  # rich's bold
        assert last_user_line(llm_server, 0) == "what now?"


async def test_thinking_shows_until_the_first_token_and_is_gone_after(
    llm_server: FakeLLMServer, llm: LLMClient
) -> None:
    # First: the model says nothing yet (role chunk only, then a stall).
    llm_server.enqueue(sse_response(chat_stream(["Hello", " world"]), stall_after=1))
    # Then: the first word, and a stall before the rest.
    llm_server.enqueue(sse_response(chat_stream(["Hello", " world"]), stall_after=4))
    async with terminal_chat(llm) as chat:
        await chat.ask("first", llm_server, 1)
        text = await chat.screen.wait(lambda text: THINKING in text)
        assert "Hello" not in text
        ctrl_c()  # before any token
        text = await chat.screen.wait(lambda text: "[stopped]" in text)
        assert THINKING not in text

        await chat.ask("second", llm_server, 2)
        text = await chat.screen.wait(lambda text: "Hello" in text)
        assert THINKING not in text  # gone with the first token, while the reply streams
        ctrl_c()
        await chat.screen.wait(lambda text: text.count("[stopped]") == 2)


async def test_reasoning_is_dim_then_collapses_when_the_answer_starts(
    llm_server: FakeLLMServer, llm: LLMClient
) -> None:
    stream = chat_stream(["The answer."], reasoning=["Let me ", "weigh this."])
    llm_server.enqueue(sse_response(stream, stall_after=3))  # reasoning, then a stall
    llm_server.enqueue(sse_response(stream))
    async with terminal_chat(llm) as chat:
        await chat.ask("why?", llm_server, 1)
        text = await chat.screen.wait(lambda text: "Let me weigh this." in text)
        assert THINKING not in text
        assert {"2", "3"} <= chat.screen.style_of("Let me weigh this.")  # dim, italic
        ctrl_c()
        await chat.screen.wait(lambda text: "[stopped]" in text)

        await chat.ask("why, really?", llm_server, 2)
        text = await chat.screen.wait(lambda text: "The answer." in text)
        answer = text[text.index("[stopped]") :]
        assert "Let me weigh this." not in answer  # collapsed to one line
        assert "▸ reasoned in 4 words" in answer
        assert "2" in chat.screen.style_of("▸ reasoned in 4 words")


async def test_ctrl_c_stops_the_reply_keeps_its_text_and_the_chat_goes_on(
    llm_server: FakeLLMServer, llm: LLMClient
) -> None:
    llm_server.enqueue(
        sse_response(chat_stream(["Half ", "an ", "answer", " never ends"]), stall_after=4)
    )
    llm_server.enqueue(sse_response(chat_stream(["Still ", "here."])))
    async with terminal_chat(llm) as chat:
        await chat.ask("tell me everything", llm_server, 1)
        await chat.screen.wait(lambda text: "Half an answer" in text)
        ctrl_c()
        text = await chat.screen.wait(lambda text: "[stopped]" in text)
        assert "Half an answer" in text

        await chat.ask("still there?", llm_server, 2)
        text = await chat.screen.wait(lambda text: "Still here." in text)
        messages = llm_server.requests[1].json["messages"]
        assert {"role": "assistant", "content": "Half an answer"} in messages  # kept


async def test_up_recalls_the_previous_line(llm_server: FakeLLMServer, llm: LLMClient) -> None:
    llm_server.enqueue(sse_response(chat_stream(["One."])), sse_response(chat_stream(["Two."])))
    async with terminal_chat(llm) as chat:
        await chat.ask("the same question", llm_server, 1)
        await chat.screen.wait(lambda text: "One." in text)
        await chat.ask(UP, llm_server, 2)
        assert last_user_line(llm_server, 1) == "the same question"


async def test_ctrl_c_at_the_prompt_clears_the_line_and_reset_forgets(
    llm_server: FakeLLMServer, llm: LLMClient
) -> None:
    llm_server.enqueue(sse_response(chat_stream(["One."])), sse_response(chat_stream(["Two."])))
    async with terminal_chat(llm) as chat:
        chat.type("never mind" + CTRL_C)
        await chat.ask("first", llm_server, 1)
        assert last_user_line(llm_server, 0) == "first"
        await chat.screen.wait(lambda text: "One." in text)
        chat.type("/reset\r")
        await chat.screen.wait(lambda text: "(conversation forgotten)" in text)
        await chat.ask("again", llm_server, 2)
        roles = [m["role"] for m in llm_server.requests[1].json["messages"]]
        assert roles == ["system", "user"]


async def test_quit_leaves(llm_server: FakeLLMServer, llm: LLMClient) -> None:
    screen = Screen()
    console = Console(file=screen, force_terminal=True, width=WIDTH, height=HEIGHT)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    with keyboard() as keys:
        keys.send_text("/quit\r")
        async with asyncio.timeout(5):
            await chat_until_it_ends(llm, keys, console, settings)
    assert not llm_server.requests
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


def test_only_a_terminal_on_both_ends_gets_the_terminal_chat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    leader, follower = os.openpty()
    with open(follower, "w") as tty_out, open(os.dup(follower)) as tty_in:
        assert is_terminal(tty_in, tty_out)
        assert not is_terminal(tty_in, io.StringIO())  # output redirected
        assert not is_terminal(io.StringIO(), tty_out)  # questions from a pipe or file
        monkeypatch.setenv("TERM", "dumb")
        assert not is_terminal(tty_in, tty_out)
    os.close(leader)
