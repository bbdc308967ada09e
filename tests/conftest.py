"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.llm.client import LLMClient
from tests.fakes.llm_server import FakeLLMServer

pytest_plugins = ["tests.log_guard", "tests.redis_fixtures"]
"""No credential the suite uses may reach a log line (see tests/log_guard.py)."""


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeLLMServer]:
    """A fake OpenAI-compatible provider on 127.0.0.1 (real HTTP)."""
    async with FakeLLMServer() as server:
        yield server


@pytest.fixture
async def llm(llm_server: FakeLLMServer) -> AsyncIterator[LLMClient]:
    """chatrelay's real model client, pointed at ``llm_server``."""
    client = llm_server.client()
    yield client
    await client.aclose()
