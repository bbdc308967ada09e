"""The ``chatrelay`` command: ``ask`` (core only) and ``run`` (composes the adapters)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from bots.slack.settings import SlackSettings, load_slack_settings
from core.ask import ask
from core.config import ConfigError, Settings, load_settings
from core.llm.model import open_model
from core.rules import load_rules
from core.state.store import open_state

EXIT_BAD_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatrelay", description="Stream an LLM into Slack, Discord or a terminal."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ask_cmd = sub.add_parser("ask", help="stream one answer to stdout")
    ask_cmd.add_argument("prompt", help="what to ask")
    sub.add_parser("run", help="run every configured platform (a console chat if none)")
    return parser


async def _run(settings: Settings, slack: SlackSettings) -> int:
    """Every platform with credentials; the console chat when there are none."""
    async with open_model(settings) as model:
        if not slack.configured:
            from bots.console.chat import run_console

            await run_console(settings, model)
            return 0
        from bots.slack.service import run_slack

        rules = load_rules(settings.channels_file)
        async with open_state() as state:
            await run_slack(slack, settings, state, model, rules)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        slack = load_slack_settings()
        if args.command == "run":
            load_rules(settings.channels_file)  # a bad rules file stops us here, not later
    except ConfigError as exc:
        print(f"chatrelay: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    if args.command == "ask":
        return asyncio.run(ask(settings, args.prompt))
    try:
        return asyncio.run(_run(settings, slack))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
