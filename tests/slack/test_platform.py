"""``SlackPlatform`` as ``bots.cli`` runs a platform (``core.service.Platform``): its
endpoint is mounted before the server starts and answers 503 until ``serve``
has the Bolt app, and while the process drains; the replies use the one shared
``Responder``."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from bots.slack.service import EVENTS_PATH, SlackPlatform
from bots.slack.settings import load_slack_settings
from core.config import load_settings
from core.llm.client import LLMClient
from core.rules import load_rules
from core.service import Platform, Responder, Services
from core.state.store import State
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.slack_server import FakeSlack
from tests.slack.conftest import SECRET
from tests.slack.test_slack_adapter import ANSWER, PIECES, answer_of, finished, stream


async def test_http_mode_answers_503_until_served_and_while_draining(
    slack: FakeSlack, llm_server: FakeLLMServer, llm: LLMClient, state: State, tmp_path: Path
) -> None:
    settings = load_slack_settings(
        slack_bot_token="xoxb-test",
        slack_signing_secret=SECRET,
        slack_api_url=slack.api_url,
        slack_edit_interval=0.2,
    )
    platform: Platform = SlackPlatform(settings)
    assert platform.name == "slack" and platform.configured
    assert platform.default_limits() == settings.default_limits()
    rules_file = tmp_path / "channels.toml"
    rules_file.write_text("")
    core = load_settings(llm_base_url="http://unused.invalid/v1", llm_model="m")
    responder = Responder(state, llm)
    services = Services(core, state, responder, load_rules(rules_file), responder.active)
    web_app = web.Application()
    draining = False
    platform.mount(web_app.router, lambda: draining)
    server = TestServer(web_app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url(EVENTS_PATH))
        event = slack.user_message("C1", "hi", user="U1", mention=True)

        async def deliver(event_id: str) -> int:
            return await slack.deliver_http(url, event, signing_secret=SECRET, event_id=event_id)

        assert await deliver("EvEarly") == 503  # not served yet: Slack retries
        llm_server.enqueue(stream(PIECES))
        async with platform.serve(services) as service:
            assert await service.connected()
            assert await deliver("Ev1") == 200
            await finished(slack, "chat.stopStream")
            draining = True
            assert await deliver("Ev2") == 503
            await service.stop_intake()
        draining = False
        assert await deliver("EvLate") == 503  # served no more
    finally:
        await server.close()
    [reply] = slack.bot_messages("C1")
    assert answer_of(reply) == ANSWER
    assert len(llm_server.requests) == 1


def test_socket_mode_mounts_nothing() -> None:
    settings = load_slack_settings(slack_bot_token="xoxb-test", slack_app_token="xapp-test")
    web_app = web.Application()
    SlackPlatform(settings).mount(web_app.router, lambda: False)
    assert len(web_app.router.routes()) == 0
