"""The Slack app manifests grant what the code needs, and nothing it doesn't.

What the code needs is found, not listed: the Slack adapter's source
(``bots/slack/*.py``) is read with ``ast`` for

- every Web API method it calls: a string naming a method slack_sdk knows
  (``api_call("chat.update")``, ``_api("chat.startStream")``,
  ``_budgeted(team, "users.info", …)``, ``scope(team, "chat.postMessage", …)``)
  and every ``client.<method>(…)`` of slack_sdk's ``AsyncWebClient``, mapped to
  the method it calls by reading slack_sdk's own source;
- every event it listens to (``app.event("…")``) and whether it has buttons
  (``app.action``).

Each method must be in ``METHOD_SCOPES`` (the scopes Slack's method reference
pages list, https://docs.slack.dev/reference/methods/) and covered by a granted
bot scope; each event the code listens to must be subscribed, each subscribed
event handled, and every granted scope used. The two manifests describe one app:
only ``settings`` differ (request URLs for HTTP mode, ``socket_mode_enabled``
without them for Socket Mode).
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.events import AGENT_EVENTS, ASSISTANT_EVENTS
from bots.slack.service import EVENTS_PATH
from tests.test_deploy import load_yaml

ROOT = Path(__file__).resolve().parents[1]
SLACK_CODE = ROOT / "bots" / "slack"
HTTP_MANIFEST = ROOT / "deploy" / "slack-manifest.yml"
SOCKET_MANIFEST = ROOT / "deploy" / "slack-manifest-socket.yml"
MANIFESTS = [HTTP_MANIFEST, SOCKET_MANIFEST]

AnyOf = frozenset[str]

METHOD_SCOPES: dict[str, tuple[AnyOf, ...]] = {
    # method: bot scopes it needs; each entry is "one of these", and every entry must hold.
    "auth.test": (),
    "chat.postMessage": (frozenset({"chat:write"}),),
    "chat.update": (frozenset({"chat:write"}),),
    "chat.postEphemeral": (frozenset({"chat:write"}),),
    "chat.startStream": (frozenset({"chat:write"}),),
    "chat.appendStream": (frozenset({"chat:write"}),),
    "chat.stopStream": (frozenset({"chat:write"}),),
    # assistant:write, or chat:write since 2026-03 (docs.slack.dev changelog)
    "assistant.threads.setStatus": (frozenset({"assistant:write", "chat:write"}),),
    "assistant.threads.setSuggestedPrompts": (frozenset({"assistant:write"}),),
    "assistant.threads.setTitle": (frozenset({"assistant:write"}),),
    # the history scope of each kind of conversation chatrelay reads threads in:
    # public and private channels (mentions, auto-reply channels) and DMs
    "conversations.replies": (
        frozenset({"channels:history"}),
        frozenset({"groups:history"}),
        frozenset({"im:history"}),
    ),
    "users.info": (frozenset({"users:read"}),),
    "usergroups.users.list": (frozenset({"usergroups:read"}),),
}

EVENT_SCOPES: dict[str, frozenset[str]] = {
    # subscription: the bot scope Slack's event reference requires (none for the others)
    "app_mention": frozenset({"app_mentions:read"}),
    "message.channels": frozenset({"channels:history"}),
    "message.groups": frozenset({"groups:history"}),
    "message.im": frozenset({"im:history"}),
    "message.mpim": frozenset({"mpim:history"}),
    "app_home_opened": frozenset(),
    "assistant_thread_started": frozenset(),
}

MESSAGE_SUBSCRIPTIONS = frozenset({"message.channels", "message.groups", "message.im"})
"""Where the ``message`` listener answers: auto-reply channels (public and private), DMs."""


# --------------------------------------------------------------------------- the code


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SLACK_CODE.glob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


@cache
def sdk_methods() -> dict[str, str]:
    """slack_sdk's ``AsyncWebClient`` attribute → the Web API method it calls."""
    found: dict[str, str] = {}
    for name, function in inspect.getmembers(AsyncWebClient, inspect.iscoroutinefunction):
        if name.startswith("_") or name == "api_call":
            continue
        calls = re.findall(r'api_call\(\s*"([^"]+)"', inspect.getsource(function))
        if len(calls) == 1:
            found[name] = calls[0]
    return found


@cache
def called_methods() -> dict[str, set[str]]:
    """Web API method → where the adapter calls it (``file:line``)."""
    known = set(sdk_methods().values())
    found: dict[str, set[str]] = {}
    for path, tree in _modules():
        for node in ast.walk(tree):
            method = None
            if isinstance(node, ast.Constant) and node.value in known:
                method = str(node.value)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in sdk_methods()
            ):
                method = sdk_methods()[node.func.attr]
            if method is not None:
                found.setdefault(method, set()).add(f"{path.name}:{node.lineno}")
    return found


def _registrations(kind: str) -> set[str]:
    """The first argument of every ``app.<kind>(…)`` call (constants only)."""
    found: set[str] = set()
    for _path, tree in _modules():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == kind
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "app"
                and node.args
            ):
                arg = node.args[0]
                found.add(str(arg.value) if isinstance(arg, ast.Constant) else "<dynamic>")
    return found


def listened_events() -> set[str]:
    return _registrations("event")


# --------------------------------------------------------------------------- the manifests


@cache
def manifest(path: Path) -> dict[str, Any]:
    [document] = load_yaml(path)
    assert isinstance(document, dict)
    return document


def bot_scopes(path: Path) -> set[str]:
    return set(manifest(path)["oauth_config"]["scopes"]["bot"])


def bot_events(path: Path) -> set[str]:
    return set(manifest(path)["settings"]["event_subscriptions"]["bot_events"])


def handled_by(subscription: str) -> str:
    """The event type a subscription delivers (``message.im`` → ``message``)."""
    return subscription.split(".", 1)[0]


def experience_events(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(events this manifest's DM experience is sent, events it is never sent)."""
    features = manifest(path)["features"]
    if "agent_view" in features:
        return AGENT_EVENTS, ASSISTANT_EVENTS
    return ASSISTANT_EVENTS, AGENT_EVENTS


# --------------------------------------------------------------------------- tests


def test_the_scan_finds_the_calls_and_listeners_it_must() -> None:
    """A scanner that finds nothing would pass every test below."""
    methods = called_methods()
    for method in ("chat.startStream", "chat.update", "users.info", "auth.test"):
        assert method in methods, f"the scan misses {method}"
    assert {"app_mention", "message", "app_home_opened"} <= listened_events()
    assert "<dynamic>" not in listened_events(), "an event name the test can't read"


def test_every_method_called_is_in_the_scope_table() -> None:
    unknown = {m: sorted(where) for m, where in called_methods().items() if m not in METHOD_SCOPES}
    assert not unknown, (
        f"the adapter calls {unknown}: add each to METHOD_SCOPES from its page at "
        "https://docs.slack.dev/reference/methods/ (and grant the scope in the manifests)"
    )


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_method_called_has_a_granted_scope(path: Path) -> None:
    granted = bot_scopes(path)
    missing = {
        method: sorted(needed - granted)
        for method in called_methods()
        for needed in METHOD_SCOPES.get(method, ())
        if not needed & granted
    }
    assert not missing, f"{path.name} lacks a scope for {missing}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_event_listened_to_is_subscribed(path: Path) -> None:
    subscribed = {handled_by(event) for event in bot_events(path)}
    _sent, never_sent = experience_events(path)
    missing = listened_events() - subscribed - never_sent
    assert not missing, f"{path.name} doesn't subscribe to {sorted(missing)}"
    messages = {e for e in bot_events(path) if e.startswith("message.")}
    assert messages == MESSAGE_SUBSCRIPTIONS, f"{path.name}: message events {sorted(messages)}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_subscribed_event_is_handled(path: Path) -> None:
    unhandled = {e for e in bot_events(path) if handled_by(e) not in listened_events()}
    assert not unhandled, f"{path.name} subscribes to {sorted(unhandled)}, which nothing handles"
    _sent, never_sent = experience_events(path)
    dead = bot_events(path) & never_sent
    assert not dead, f"{path.name}: its DM experience is never sent {sorted(dead)}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_granted_scope_is_used(path: Path) -> None:
    used: set[str] = set()
    for method in called_methods():
        for needed in METHOD_SCOPES.get(method, ()):
            used |= needed
    for event in bot_events(path):
        used |= EVENT_SCOPES[event]
    unused = bot_scopes(path) - used
    assert not unused, f"{path.name} grants {sorted(unused)}, which nothing uses"
    missing = {e: sorted(EVENT_SCOPES[e] - bot_scopes(path)) for e in bot_events(path)}
    assert not {e: s for e, s in missing.items() if s}, f"{path.name}: event scopes {missing}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_app_uses_the_agent_messaging_experience(path: Path) -> None:
    """New apps get only the agent experience (Slack's migration guide); the DM must be
    writable, and buttons need interactivity."""
    features = manifest(path)["features"]
    assert "assistant_view" not in features
    assert features["agent_view"]["agent_description"].strip()
    home = features["app_home"]
    assert home["messages_tab_enabled"] is True
    assert home["messages_tab_read_only_enabled"] is False
    assert bot_events(path) >= AGENT_EVENTS
    if _registrations("action"):
        assert manifest(path)["settings"]["interactivity"]["is_enabled"] is True


def test_http_and_socket_manifests_are_one_app() -> None:
    http, socket = manifest(HTTP_MANIFEST), manifest(SOCKET_MANIFEST)
    assert {k: v for k, v in http.items() if k != "settings"} == {
        k: v for k, v in socket.items() if k != "settings"
    }
    assert http["settings"]["socket_mode_enabled"] is False
    for section in ("event_subscriptions", "interactivity"):
        url = urlparse(http["settings"][section]["request_url"])
        assert url.scheme == "https" and url.path == EVENTS_PATH, f"{section}: {url.geturl()}"
    assert socket["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in str(socket), "Socket Mode takes no request URLs"
    strip = {"event_subscriptions": ["request_url"], "interactivity": ["request_url"]}
    same = {
        key: (
            {k: v for k, v in value.items() if k not in strip.get(key, [])}
            if isinstance(value, dict)
            else value
        )
        for key, value in http["settings"].items()
        if key != "socket_mode_enabled"
    }
    assert same == {k: v for k, v in socket["settings"].items() if k != "socket_mode_enabled"}
