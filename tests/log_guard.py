"""A pytest plugin: no credential the suite uses may reach a log line.

For the whole session a handler on the root logger formats every record the way
production writes it (``core.telemetry.logs``' text and JSON formatters, redaction
included) and looks in the result for the credentials the tests and the fakes
use. A test during which one appeared fails (an error at its teardown, naming
the credential and the logger); one written outside any test fails the session.
So a log line added anywhere, by chatrelay or by a library it calls, that
carries a token in its message, its arguments or a traceback is caught by the
test that exercises it, not in production.

Levels: chatrelay's own loggers run at DEBUG (every line we write is checked);
the libraries' at ``LIBRARY_LEVELS`` (see there for why not all at DEBUG).

The plugin also restores ``core.telemetry.logs``' registry of secret values after each
test, so a test that registers the suite's credentials (as ``chatrelay run``
does in production) cannot hide a later test's leak.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import pytest

from core.telemetry import logs

CHATRELAY_LOGGERS = ("core", "bots", "chatrelay")
LIBRARY_LEVELS = {
    "discord": logging.DEBUG,
    "slack_sdk": logging.INFO,
    "slack_bolt": logging.INFO,
    "aiohttp": logging.INFO,
    "httpx": logging.INFO,
}
"""Why not all at DEBUG: measured on 2 shared cores (pytest's wall and CPU time):

- tests/discord: no guard 47.3-47.6 s wall, 6.6-6.8 s CPU; libraries at INFO +1 % wall;
  discord.py at DEBUG (these levels) +4 % wall, 8.2-9.5 s CPU, 2,700 lines checked
  instead of 380. Worth it: discord.py's debug lines are the ones that carry
  interaction tokens (gateway payloads, webhook URLs), as a run with ``redact`` made a
  no-op showed.
- tests/discord + tests/slack + tests/test_service.py with every library at DEBUG:
  +25-30 % CPU (14.2-15.6 s to 17.9-20.0 s) and up to +18 % wall, over the ~10 % this
  guard may cost; slack_sdk's debug lines are whole request and response bodies (its
  own code already writes ``Authorization: (redacted)``), and they bury every failure
  report.

``CHATRELAY_LOG_GUARD_LIBRARY_LEVEL=DEBUG`` puts every library at that level for one run
(after upgrading slack_sdk or slack_bolt, say)."""
_override = os.environ.get("CHATRELAY_LOG_GUARD_LIBRARY_LEVEL")
if _override:
    LIBRARY_LEVELS = dict.fromkeys(LIBRARY_LEVELS, logging.getLevelName(_override.upper()))

TEST_CREDENTIALS = (
    # Slack: the fake's bot and app tokens, a token it refuses, the signing
    # secrets of the adapter and service tests, the legacy verification token
    # the fake puts in every event.
    "xoxb-test",
    "xoxb-wrong",
    "xapp-test",
    "xoxb-1",  # the settings and run-selection tests'
    "xapp-1",
    "test-signing-secret",
    "shh-signing-secret",
    "verification-token",
    # Discord: the fake's bot token, and one it refuses.
    "test-token",
    "not-the-token",
    # Model providers' API keys.
    "sk-test",
    "sk-secret",
    "sk-ant-1",
)
"""Every credential the tests and fakes use that is distinctive enough to look
for as a substring. Left out: ``"s"``, ``"wrong"``, ``"other"``, ``"discord"`` and
``"sk-1"`` (unit tests of settings, signatures and headers), which would match
ordinary text (``task-1``)."""

CREDENTIAL_SHAPES = re.compile(r"aW50ZXJhY3Rpb24[A-Za-z0-9_-]{8,}")
"""Credentials the fakes generate: the fake Discord's interaction tokens
(``"aW50ZXJhY3Rpb24" + token_urlsafe(48)``), a new one per interaction."""

OUTSIDE_TESTS = "outside any test"


@dataclass(frozen=True)
class Leak:
    where: str
    """The test running when the line was written."""
    logger: str
    line: str
    """The line as written, each credential masked."""


def credentials_in(line: str) -> list[str]:
    """The credentials ``line`` carries (the suite's, or shaped like the fakes')."""
    found = [secret for secret in TEST_CREDENTIALS if secret in line]
    return found + CREDENTIAL_SHAPES.findall(line)


def mask(credential: str) -> str:
    """A credential shown in a failure without being repeated in CI logs."""
    return f"<credential {credential[:6]}…>"


class LogGuard(logging.Handler):
    """Formats each record as production would and keeps the lines that carry
    a credential."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.formatters: tuple[logging.Formatter, ...] = (
            logs.formatter("text"),
            logs.formatter("json"),
        )
        self.reply_ids = logs.ReplyIdFilter()
        self.where = OUTSIDE_TESTS
        self.leaks: list[Leak] = []
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        # A copy: formatting caches the traceback on the record, and the other
        # handlers (pytest's capture) must see the record as it was logged.
        copy = logging.makeLogRecord(record.__dict__)
        self.reply_ids.filter(copy)
        for formatter in self.formatters:
            line = formatter.format(copy)
            found = credentials_in(line)
            if found:
                for credential in found:
                    line = line.replace(credential, mask(credential))
                self.leaks.append(Leak(self.where, record.name, line))
                return

    def take(self, where: str) -> list[Leak]:
        """The leaks written while ``where`` ran, forgotten once taken."""
        taken = [leak for leak in self.leaks if leak.where == where]
        self.leaks = [leak for leak in self.leaks if leak.where != where]
        return taken

    def attach(self) -> None:
        """(Again) on the root logger: code under test that configures logging
        (``setup_logging`` replaces the root's handlers) must not switch it off."""
        root = logging.getLogger()
        if self not in root.handlers:
            root.addHandler(self)


_guard = LogGuard()


def describe(leaks: list[Leak]) -> str:
    lines = [
        f"{len(leaks)} log line(s) carried a credential: log it without the credential,"
        " or teach core/telemetry/logs.py its shape"
    ]
    lines += [f"  [{leak.logger}] {leak.line}" for leak in leaks[:20]]
    if len(leaks) > 20:
        lines.append(f"  ... and {len(leaks) - 20} more")
    return "\n".join(lines)


def pytest_configure(config: pytest.Config) -> None:
    for name in CHATRELAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    for name, level in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    _guard.attach()


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger().removeHandler(_guard)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    _guard.attach()
    _guard.where = item.nodeid
    secrets = logs.registered_secrets()
    yield
    logs.reset_secrets(secrets)
    _guard.where = OUTSIDE_TESTS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    outcome = yield
    if call.when != "teardown":
        return
    leaks = _guard.take(item.nodeid)
    if leaks:
        report = outcome.get_result()  # type: ignore[attr-defined]
        report.outcome = "failed"
        report.longrepr = describe(leaks)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _guard.leaks and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _guard.leaks:
        terminalreporter.section("log guard", red=True)
        terminalreporter.line(describe(_guard.leaks))
    if os.environ.get("CHATRELAY_LOG_GUARD_STATS"):
        terminalreporter.line(f"log guard: {_guard.records} records checked")
