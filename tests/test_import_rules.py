"""The house's import rules (docs/design.md, "Rules of the house"), read from the
source: every module under ``core/`` and ``bots/`` is parsed (never imported)
and each import it could make is checked, wherever it sits: at the top, inside a
function (a lazy import), under ``if TYPE_CHECKING:`` (a type is a dependency
too), relative, or through ``importlib.import_module("…")``.

1. ``core`` never imports ``bots``: the core knows nothing of the platforms.
2. Adapters never import each other: ``bots.slack``, ``bots.discord`` and
   ``bots.console`` each stand alone. The rooms that compose services
   (``bots.cli``, ``bots.check``) may import any adapter; the shared room
   ``bots.ops`` (ops routes, liveness, metrics) imports none.
3. Only ``core.state`` talks to Redis: nothing outside it imports ``redis``.
   A module that needs a Redis type names one of ``core.state``'s instead.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "bots")
ADAPTERS = ("bots.slack", "bots.discord", "bots.console")
SHARED = ("bots.ops",)
"""Rooms every adapter may use, which therefore use no adapter."""
REDIS_ROOM = "core.state"

ALLOWED: dict[tuple[str, str], str] = {}
"""Known exceptions, each (importing module, imported name) with its reason.
Absent from the code is fine: an exception allows, it never requires."""


@dataclass(frozen=True, slots=True)
class Imported:
    name: str
    """The dotted name as far as the source tells it (``from a import b``: ``a.b``)."""
    line: int


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def module_name(path: Path) -> tuple[str, bool]:
    """The dotted name of the module at ``path`` (under ``ROOT``), and whether it
    is a package's ``__init__``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Imported]:
    """Every module ``source`` may import, wherever in the file the import is."""
    found: list[Imported] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Imported(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for alias in node.names:
                name = base if alias.name == "*" else f"{base}.{alias.name}"
                found.append(Imported(name, node.lineno))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append(Imported(first.value, node.lineno))
    return found


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts.pop()  # a module's ``.`` is its package
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def _adapter_of(name: str) -> str | None:
    return next((adapter for adapter in ADAPTERS if within(name, adapter)), None)


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """What in ``source`` (the module ``module``) breaks a rule, one line each."""
    broken = []
    own_adapter = _adapter_of(module)
    shared = any(within(module, room) for room in SHARED)
    for imported in imports_of(source, module, is_package=is_package):
        name = imported.name
        if (module, name) in ALLOWED:
            continue
        where = f"{module}:{imported.line} imports {name}"
        if within(module, "core") and within(name, "bots"):
            broken.append(f"{where}: core never imports bots")
        target = _adapter_of(name)
        if target is not None and own_adapter is not None and target != own_adapter:
            broken.append(f"{where}: adapters never import each other")
        if target is not None and shared:
            broken.append(f"{where}: a shared room imports no adapter")
        if within(name, "redis") and not within(module, REDIS_ROOM):
            broken.append(f"{where}: only core.state talks to Redis")
    return broken


def sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_the_code_keeps_the_import_rules() -> None:
    found = sources()
    names = {module_name(path)[0] for path in found}
    # The walk sees the house, so an empty or misplaced walk can't pass.
    assert {
        "core.reply.engine",
        "core.state.store",
        "bots.slack.events",
        "bots.discord.events",
    } <= names
    assert {"bots.console.chat", "bots.cli", "bots.ops"} <= names
    broken = []
    for path in found:
        module, is_package = module_name(path)
        broken += violations(path.read_text(encoding="utf-8"), module, is_package=is_package)
    assert broken == []


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        ("core.reply.engine", "from bots.slack.sink import SlackReplySink\n", "core never imports"),
        ("core.reply.engine", "def f():\n    import bots.cli\n", "core never imports"),
        ("core", "from bots import discord\n", "core never imports"),
        ("bots.slack.events", "from bots.discord.format import neutralise\n", "each other"),
        ("bots.discord.events", "import bots.slack.api\n", "each other"),
        ("bots.discord", "from bots import slack\n", "each other"),
        ("bots.console.chat", "from bots.slack.format import strip_mention\n", "each other"),
        ("bots.slack.api", "from ..discord import format\n", "each other"),
        ("bots.ops", "from bots.discord.service import DiscordService\n", "shared room"),
        ("bots.slack.conversations", "from redis.asyncio import Redis\n", "Redis"),
        ("bots.discord.controls", "import redis\n", "Redis"),
        ("core.service.responder", "import redis.exceptions\n", "Redis"),
        (
            "bots.discord.conversations",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from redis.asyncio import Redis\n",
            "Redis",
        ),
        ("core.reply.engine", "import importlib\nimportlib.import_module('redis')\n", "Redis"),
    ],
)
def test_a_broken_rule_is_found(module: str, source: str, rule: str) -> None:
    broken = violations(source, module, is_package=module in {"core", "bots.discord"})
    assert len(broken) == 1 and rule in broken[0], broken


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("bots.cli", "from bots.slack.service import SlackPlatform\n"),  # composes
        ("bots.check", "def f():\n    from bots.discord.preflight import check_discord\n"),
        ("bots.slack.preflight", "from bots.check import Finding\n"),
        ("bots.discord.events", "from bots.discord.format import neutralise\n"),  # its own
        ("bots.discord.events", "from .format import neutralise\n"),
        ("bots.slack.events", "from core.state.connection import REDIS_FAILURES\n"),
        ("core.state.store", "from redis.asyncio import Redis\n"),
        ("core.state", "from redis import asyncio\n"),
        ("bots.slack.events", "import redislite_helpers\n"),  # not the redis package
    ],
)
def test_what_the_rules_allow(module: str, source: str) -> None:
    assert violations(source, module, is_package=module == "core.state") == []


ROOMED = ("slack", "discord")


def test_every_adapter_has_the_same_rooms() -> None:
    """Knowing one adapter means knowing all: the same files, each for the same
    job (``docs/design.md`` lists them), and no other."""
    rooms = {
        platform: sorted(
            path.name for path in (ROOT / "bots" / platform).iterdir() if path.suffix == ".py"
        )
        for platform in ROOMED
    }
    assert rooms["slack"] == rooms["discord"]
    assert {"events.py", "replies.py", "sink.py", "api.py", "service.py"} <= set(rooms["slack"])
    assert not [
        path
        for platform in ROOMED
        for path in (ROOT / "bots" / platform).iterdir()
        if path.is_dir() and path.name != "__pycache__"
    ]
