"""A token's walk from SSE bytes to a platform call stays short and one-way.

``bench/walk.py`` streams a marked word from the fake LLM server (over HTTP)
through the real engine into a platform's real sink and client, against the
platform's fake server, and records which project files a function of which
was handed the word, and every call between project files. The seam is
one-way: a sink never calls back into the engine; and the word crosses the
rooms of the house in order (bytes, SSE, dialect, client, engine, pages,
sink, format, API), no others: a new hop on the path fails here.
"""

from __future__ import annotations

import pytest

from bench.walk import Walk, discord_walk, slack_walk
from core.reply import LocalBudget

STREAM = {"core/llm/client.py", "core/llm/sse.py", "core/llm/chat.py"}
REPLY = {"core/reply/engine.py", "core/reply/markdown.py"}


def adapter(platform: str) -> set[str]:
    return {f"bots/{platform}/sink.py", f"bots/{platform}/format.py", f"bots/{platform}/api.py"}


@pytest.mark.parametrize(
    ("platform", "walk"), [("slack", slack_walk), ("discord", discord_walk)], ids=str
)
async def test_a_token_crosses_eight_files_and_no_sink_calls_back_into_the_engine(
    platform: str, walk: object
) -> None:
    measured: Walk = await walk(LocalBudget())  # type: ignore[operator]
    assert measured.token_path == STREAM | REPLY | adapter(platform)
    assert measured.back_into_engine() == []
    assert not any(
        a.startswith("bots/") and b.startswith("core/reply/engine") for a, b in measured.edges
    )
