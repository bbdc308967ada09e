"""The ``chatrelay`` command: ``ask`` (core only) and ``run`` (composes the adapters).

Each command imports only what it uses, where it uses it: ``--help`` needs
argparse alone, ``ask`` the core and its HTTP client, ``run`` the platforms
that are configured (Slack's and Discord's SDKs, aiohttp and Redis cost more
CPU to import than ``ask`` spends streaming a long answer).
``tests/test_cli_imports.py`` keeps it so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from bots.discord.settings import DiscordSettings
    from bots.ops import Check
    from bots.slack.settings import SlackSettings
    from core.config import Settings
    from core.llm import LLMClient
    from core.reply import RateLimit
    from core.service import Platform, Service
    from core.state import State
    from core.telemetry.metrics import ChatrelayMetrics

log = logging.getLogger("chatrelay")

EXIT_BAD_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_FORCED = 1

SETTINGS_HELP = (
    "Settings come from the environment or a .env file; every one is listed, with "
    "its default, in README.md (sections 'Pointing at a real model', 'Slack', "
    "'Discord', 'Shared state'). `chatrelay check` validates them and reaches "
    "each configured dependency."
)


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when
    asked (``--help`` must not pay for importlib.metadata)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("chatrelay")
        except PackageNotFoundError:
            found = "unknown (not installed)"
        print(f"chatrelay {found}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatrelay",
        description="Stream an LLM into Slack, Discord or a terminal.",
        epilog=SETTINGS_HELP,
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)
    ask_cmd = sub.add_parser("ask", help="stream one answer to stdout")
    ask_cmd.add_argument("prompt", help="what to ask")
    sub.add_parser(
        "check",
        help="validate the settings and the channels file, then reach each configured "
        "dependency (Redis, the model, Slack, Discord); exit 0 when all is well",
    )
    run_cmd = sub.add_parser("run", help="run every configured platform (a console chat if none)")
    run_cmd.add_argument(
        "--platform",
        choices=("all", "slack", "discord"),
        default="all",
        help="serve only this platform (one process per platform, as in the Procfile)",
    )
    run_cmd.add_argument(
        "--slack-mode",
        choices=("auto", "http", "socket"),
        default="auto",
        help="auto: Socket Mode when SLACK_APP_TOKEN is set; http: always HTTP mode",
    )
    return parser


async def _run(settings: Settings, slack: SlackSettings, discord: DiscordSettings) -> int:
    """Every platform with credentials; the console chat when there are none."""
    if not slack.configured and not discord.configured:
        from bots.console.chat import run_console
        from core.llm.model import open_model

        async with open_model(settings) as model:
            await run_console(settings, model)
        return 0
    return await _serve(settings, slack, discord)


async def _serve(settings: Settings, slack: SlackSettings, discord: DiscordSettings) -> int:
    """Serve the configured platforms until SIGTERM/SIGINT, then drain gracefully.

    One process, one port (health, readiness and a platform's HTTP events),
    one shared state, one ``Responder``; every platform gets the same
    ``Services`` and is handled alike. The first signal stops every
    platform's intake and gives replies in flight ``SHUTDOWN_GRACE_S`` to
    finish before the rest are finalised as interrupted; only then do the
    platforms close (Discord keeps its gateway open through the drain and hands
    the messages that arrive over to the next process); a second signal exits
    at once."""
    from aiohttp import web

    from bots.ops import Liveness, add_ops_routes, metrics_app
    from core.llm.model import open_model
    from core.rules import LiveRules
    from core.service import ActiveReplies, Responder, Services
    from core.state import open_state
    from core.telemetry.metrics import ChatrelayMetrics

    platforms = configured_platforms(slack, discord)
    stop = _stop_on_signals()
    metrics = ChatrelayMetrics()
    active = ActiveReplies()
    rules = LiveRules(settings.channels_file)
    web_app = web.Application()
    draining = lambda: not active.accepting  # noqa: E731
    for platform in platforms:  # before the server starts: aiohttp freezes its routes
        platform.mount(web_app.router, draining)
    async with (
        open_model(settings) as model,
        open_state(defaults=platform_limits(slack)) as state,
        contextlib.AsyncExitStack() as stack,
    ):
        _observe(metrics, model, state)
        metrics_runner = await _serve_metrics(metrics_app(metrics), settings.metrics_port)
        services = Services(
            core=settings,
            state=state,
            responder=Responder(state, model, metrics=metrics, active=active),
            rules=rules,
            active=active,
            metrics=metrics,
        )
        checks: dict[str, Check] = {"redis": state.redis.ping}
        # Platform connections only; each is "not yet" until it has connected.
        checks.update({platform.name: _not_yet for platform in platforms})
        liveness = Liveness(checks, settings.liveness_down_after, draining, skip={"redis"})
        add_ops_routes(web_app, checks, draining, liveness)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, port=settings.port).start()
        log.info("serving on port %d (/healthz, /readyz)", settings.port)
        watcher = asyncio.create_task(rules.watch())
        running: list[Service] = []
        try:
            for platform in platforms:  # after the server: /healthz answers while they connect
                service = await stack.enter_async_context(platform.serve(services))
                checks[platform.name] = service.connected
                running.append(service)
            await stop.wait()
            log.info(
                "shutting down: no new events, %.0fs for replies in flight",
                settings.shutdown_grace_s,
            )
            for service in running:
                await service.stop_intake()
            await active.drain(settings.shutdown_grace_s)
            for service in running:
                await service.close()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await runner.cleanup()
            if metrics_runner is not None:
                await metrics_runner.cleanup()
    log.info("stopped")
    return 0


def configured_platforms(slack: SlackSettings, discord: DiscordSettings) -> list[Platform]:
    """The platforms with credentials, each imported only when configured (their
    SDKs are the costliest imports of a run)."""
    platforms: list[Platform] = []
    if slack.configured:
        from bots.slack.service import SlackPlatform

        platforms.append(SlackPlatform(slack))
    if discord.configured:
        from bots.discord.service import DiscordPlatform

        platforms.append(DiscordPlatform(discord))
    return platforms


def platform_limits(slack: SlackSettings | None = None) -> dict[str, RateLimit]:
    """Every adapter's default rate limits, merged (scope pattern -> limit), for
    ``open_state``; ``slack``: the settings Slack's windows are counted with
    (``RATE_TIER_WINDOW``, ``SLACK_STATUS_PER_MINUTE``), else their defaults.

    Both platforms' always, whichever are configured: their patterns never
    overlap (``slack:…``, ``discord:…``), a process never calls in a scope of a
    platform it doesn't serve, and so every process, whatever its
    ``--platform``, builds the same table as its replicas."""
    from bots.discord.limits import DEFAULT_LIMITS as DISCORD
    from bots.slack.limits import DEFAULT_LIMITS as SLACK

    return {**(SLACK if slack is None else slack.default_limits()), **DISCORD}


def _observe(metrics: ChatrelayMetrics, model: LLMClient, state: State) -> None:
    """Point the model client's, the shared state's hooks at ``metrics``."""
    model.observer = metrics.llm
    state.inflight.events = metrics.inflight_event
    state.inflight.finals_waiting = metrics.finals_waiting_now
    state.shared_budget.on_redis_error = metrics.redis_error
    state.shared_budget.on_degraded = metrics.redis_degraded
    inflight = state.inflight
    metrics.inflight_unsettled.set_function(lambda: inflight.unsettled)


async def _serve_metrics(app: web.Application, port: int) -> web.AppRunner | None:
    """``/metrics`` on ``METRICS_PORT``. A port already taken is logged, not fatal:
    a bot that can't be scraped still answers its users (Prometheus reports the
    target down)."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, port=port).start()
    except OSError as exc:
        log.error("cannot serve /metrics on METRICS_PORT %d: %s", port, exc)
        await runner.cleanup()
        return None
    log.info("serving /metrics on port %d", port)
    return runner


async def _not_yet() -> bool:
    """Readiness of a platform still connecting."""
    return False


def _stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGTERM/SIGINT; the second one exits at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(EXIT_FORCED)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    return stop


def _select(
    args: argparse.Namespace, slack: SlackSettings, discord: DiscordSettings
) -> tuple[SlackSettings, DiscordSettings]:
    """Apply ``--platform`` and ``--slack-mode`` to the settings read.

    A platform asked for by name must be configured: a ``web`` dyno or a pod
    started with ``--platform slack`` and no token must stop with one line, not
    fall back to the console chat and hang without a health endpoint."""
    from core.config import ConfigError

    if args.platform == "slack" and not slack.configured:
        raise ConfigError("--platform slack: SLACK_BOT_TOKEN is not set")
    if args.platform == "discord" and not discord.configured:
        raise ConfigError("--platform discord: DISCORD_BOT_TOKEN is not set")
    if args.platform not in ("all", "slack"):
        slack = slack.model_copy(update={"slack_bot_token": None})
    if args.platform not in ("all", "discord"):
        discord = discord.model_copy(update={"discord_bot_token": None})
    if args.slack_mode == "http":
        slack = slack.model_copy(update={"slack_app_token": None})
        if slack.configured and slack.slack_signing_secret is None:
            raise ConfigError("invalid setting SLACK_SIGNING_SECRET: required in HTTP mode")
    elif args.slack_mode == "socket" and slack.configured and not slack.socket_mode:
        raise ConfigError("invalid setting SLACK_APP_TOKEN: required for --slack-mode socket")
    if not slack.configured and not discord.configured and not _stdin_has_input():
        raise ConfigError(
            "no platform is configured (set SLACK_BOT_TOKEN or DISCORD_BOT_TOKEN), and the "
            "console chat has no input (stdin is closed or /dev/null)"
        )
    return slack, discord


def _check(settings: Settings, slack: SlackSettings, discord: DiscordSettings) -> int:
    """Print one line per check; 0 when none failed, 1 otherwise."""
    from bots.check import all_well, print_table, run_checks
    from core.telemetry import setup_logging

    # The table says it all; what does get logged is redacted like a run's logs.
    setup_logging("ERROR", settings.log_format, secrets=(settings, slack, discord))
    findings = asyncio.run(run_checks(settings, slack, discord))
    print_table(findings, sys.stdout)
    return 0 if all_well(findings) else 1


def _stdin_has_input() -> bool:
    """Whether a console chat could read anything: a terminal, a pipe or a file,
    not a closed stdin or ``/dev/null`` (a container started without a
    platform's token, where a console would end at once and look like success)."""
    import stat

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return sys.stdin.isatty() or not stat.S_ISCHR(mode)


def _skip_collections_at_exit() -> None:
    """At exit, before the interpreter finalises its modules, freeze the garbage
    collector's generations (``gc.freeze``): finalisation then skips the full
    collections over every object the imports made (pydantic's schemas,
    httpx...), 10-20 % of a short ``chatrelay ask``'s CPU. It changes nothing
    before the exit (atexit handlers run first; streams are closed and flushed
    by then), and registered once, it does the same for a process that calls
    ``main`` several times (a test run)."""
    import atexit
    import gc

    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # After parsing: --help and usage errors import none of this.
    from core.config import ConfigError, Unavailable, load_settings
    from core.telemetry import setup_logging

    try:
        settings = load_settings()
        if args.command == "ask":  # the platforms' settings are none of its business
            from bots.console.ask import ask

            setup_logging(settings.log_level, settings.log_format, secrets=(settings,))
            _skip_collections_at_exit()
            return asyncio.run(ask(settings, args.prompt))

        from bots.discord.settings import load_discord_settings
        from bots.slack.settings import load_slack_settings
        from core.rules import load_rules

        if args.command == "check":
            return _check(settings, load_slack_settings(), load_discord_settings())
        slack, discord = _select(args, load_slack_settings(), load_discord_settings())
        load_rules(settings.channels_file)  # a bad rules file stops us here, not later
        setup_logging(settings.log_level, settings.log_format, secrets=(settings, slack, discord))
        return asyncio.run(_run(settings, slack, discord))
    except ConfigError as exc:  # a bad setting, or a token or an intent a platform refused
        print(f"chatrelay: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except Unavailable as exc:  # Redis, the embedded server, a platform's API
        print(f"chatrelay: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
