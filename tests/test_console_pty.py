"""``chatrelay run`` in a real pseudo-terminal: the terminal chat as a person gets it.

The process gets the pty as its controlling terminal, so Ctrl-C typed while a
reply streams reaches it as the tty driver sends it (SIGINT to the foreground
process group), and prompt-toolkit and rich see a real terminal. The model is
the fake LLM server; every wait is on output from the pty, bounded.
"""

from __future__ import annotations

import asyncio
import codecs
import fcntl
import os
import struct
import sys
import termios
from pathlib import Path

from tests.fakes.llm_server import FakeLLMServer, sse_response
from tests.fakes.streams import chat_stream
from tests.test_console_terminal import CTRL_C, CTRL_D, UP, Screen, last_user_line

REPO = Path(__file__).resolve().parent.parent


async def prompt_after(screen: Screen, text: str) -> None:
    """Until the prompt is drawn after ``text``: only then is the terminal in raw
    mode, where Up and Ctrl-D are keys (in cooked mode the tty driver would
    take Ctrl-D as end-of-file itself)."""

    def drawn(_: str) -> bool:
        raw = screen.getvalue()
        return text in raw and "you> " in raw[raw.rindex(text) :]

    await screen.wait(drawn)


def _take_the_terminal() -> None:  # runs in the child, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def test_chat_in_a_real_terminal(llm_server: FakeLLMServer, tmp_path: Path) -> None:
    llm_server.enqueue(sse_response(chat_stream(["**Half** ", "an ", "answer"]), stall_after=4))
    llm_server.enqueue(sse_response(chat_stream(["Still ", "here."])))
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "SLACK_", "DISCORD_"))
    }
    env = clean | {
        "PYTHONPATH": str(REPO),
        "STATE_DIR": str(tmp_path / "state"),
        "TERM": "xterm-256color",
        "PROMPT_TOOLKIT_NO_CPR": "1",  # nobody here answers cursor position requests
        "LLM_BASE_URL": llm_server.base_url,
        "LLM_MODEL": "m",
        "LLM_MAX_RETRIES": "0",
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "run",
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
        preexec_fn=_take_the_terminal,  # before exec: only fcntl
    )
    os.close(follower)
    screen = Screen()
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    loop = asyncio.get_running_loop()

    def read() -> None:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed its end
            data = b""
        if not data:
            loop.remove_reader(leader)
        screen.write(decoder.decode(data))

    loop.add_reader(leader, read)
    try:
        await screen.wait(lambda text: "chatrelay console" in text, timeout=30)
        await prompt_after(screen, "chatrelay console")
        os.write(leader, b"tell me\r")
        text = await screen.wait(lambda text: "Half an answer" in text)
        assert "**" not in text  # Markdown, rendered
        assert "\x1b[" in screen.getvalue()  # a terminal gets ANSI codes
        os.write(leader, CTRL_C.encode())  # the tty driver turns it into SIGINT
        text = await screen.wait(lambda text: "[stopped]" in text)
        assert "Half an answer" in text
        await prompt_after(screen, "[stopped]")
        os.write(leader, (UP + "\r").encode())
        await screen.wait(lambda text: "Still here." in text)
        assert last_user_line(llm_server, 1) == "tell me"
        await prompt_after(screen, "Still here.")
        os.write(leader, CTRL_D.encode())
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        loop.remove_reader(leader)
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(leader)
