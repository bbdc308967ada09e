"""The ``chatrelay`` command: ``ask`` (core only) and ``run`` (composes the adapters)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from core.ask import ask
from core.config import ConfigError, Settings, load_settings
from core.llm.model import open_model

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


async def _run(settings: Settings) -> int:
    from bots.console.chat import run_console

    async with open_model(settings) as model:
        await run_console(settings, model)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"chatrelay: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    if args.command == "ask":
        return asyncio.run(ask(settings, args.prompt))
    return asyncio.run(_run(settings))


if __name__ == "__main__":
    sys.exit(main())
