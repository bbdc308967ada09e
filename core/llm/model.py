"""Builds the model client from settings, starting the demo model when none is set."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.config import Settings
from core.llm.client import LLMClient, RetryPolicy, Timeouts
from core.llm.demo import DEMO_MODEL, DemoModelServer
from core.llm.provider import Provider

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_model(settings: Settings) -> AsyncIterator[LLMClient]:
    """An ``LLMClient`` for the configured providers, closed on exit.

    With no ``LLM_BASE_URL``, the demo model is served on a loopback port for
    as long as the client lives, so the real HTTP and SSE path still runs."""
    timeouts = Timeouts(
        connect=settings.llm_connect_timeout,
        first_token=settings.llm_first_token_timeout,
        idle=settings.llm_idle_timeout,
    )
    retry = RetryPolicy(max_retries=settings.llm_max_retries)
    providers = settings.providers()
    if providers:
        client = LLMClient(providers, timeouts=timeouts, retry=retry)
        try:
            yield client
        finally:
            await client.aclose()
        return
    log.info("no LLM_BASE_URL set: answering with the built-in demo model")
    async with DemoModelServer() as demo:
        client = LLMClient(
            [Provider(base_url=demo.base_url, model=DEMO_MODEL)], timeouts=timeouts, retry=retry
        )
        try:
            yield client
        finally:
            await client.aclose()
