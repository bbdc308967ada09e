"""A deterministic fault schedule shared by the fake platforms (Slack, Discord).

Streaming bots fail in production on the calls that go wrong: a 429 in the middle of
a stream, a 500 on the final edit, an answer that comes too late, a connection that
drops after the platform may or may not have applied the call. Tests must be able to
put exactly such a failure on exactly one call, or spread them at random over a run
and still get the same run twice, and a checker must be able to tell the failures a
test injected from the ones the fake's own limits produced (a bot that paces itself
well causes none of the latter). :class:`FaultSchedule` does that for both fakes.

Keys name what is faulted: a Slack Web API method (``"chat.appendStream"``) or a
Discord route, ``"<HTTP method> <route template>"`` (``"PATCH
channels/{channel_id}/messages/{message_id}"``; the fake Discord also accepts Discord's
own spelling, see :meth:`tests.fakes.discord_server.FakeDiscord.fault_key`).

Each call a fake receives gets an *ordinal* per key (1 for the first call to that key,
2 for the next…), recorded on the call. A fault applies to:

- the next ``count`` calls of a key: ``faults.add("chat.update", "500", count=2)``;
- the calls with ordinals ``at .. at + count - 1``: ``faults.add(key, "429", at=3)``;
- every call, until cleared: ``count=None``;
- a random choice per call, from :meth:`FaultSchedule.schedule` with a seed. The
  choice for a key's n-th call depends only on (seed, key, n), never on how calls to
  different keys interleave, so concurrent replies still see the same faults.

Explicit rules are looked at first, in the order they were added, then random
schedules; one call gets at most one fault.

Kinds (:data:`FaultKind`):

``429``
    The platform's rate-limit answer (Slack: HTTP 429, ``Retry-After``,
    ``{"ok": false, "error": "ratelimited"}``; Discord: HTTP 429, the JSON body, the
    ``X-RateLimit-*`` headers and ``Via``).
``500``
    HTTP 500 with the platform's error body.
``internal_error``
    Slack only: HTTP 200 with ``{"ok": false, "error": "internal_error"}``.
``slow``
    Wait ``delay`` seconds, then handle the call normally (it IS applied, even if the
    client gave up meanwhile, as a real platform does).
``drop``
    Wait ``delay`` seconds, then close the connection without any response.
``error``
    A custom status and body (what the older ``FakeSlack.fail()`` and
    ``FakeDiscord.fail_next()`` script).

A faulted call other than ``slow`` is not applied: the fake answers before it
authenticates the call further, counts it against a rate limit or changes any state.
(Slack and Discord may have applied a call whose connection dropped; a test that
wants that case uses ``slow`` with a client timeout shorter than ``delay``.)
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

FaultKind = Literal["429", "500", "internal_error", "slow", "drop", "error"]
ALL_KINDS: frozenset[str] = frozenset(get_args(FaultKind))

DEFAULT_SLOW_DELAY = 1.0
"""Seconds a ``slow`` fault waits when no ``delay`` is given."""


@dataclass(frozen=True)
class Fault:
    """What to do to one call."""

    kind: FaultKind
    retry_after: float | None = 1.0
    """``429``: the seconds the platform asks the client to wait (None: no header)."""
    delay: float = 0.0
    """Seconds before the answer (``slow``: then a normal answer; ``drop``: then the
    connection closes). Other kinds may wait too."""
    status: int | None = None
    """Overrides the kind's HTTP status (``error`` needs one)."""
    error: str | None = None
    """Slack: overrides the ``error`` string of the body."""
    body: Any = None
    """Discord: overrides the JSON body."""


@dataclass(frozen=True)
class Injection:
    """One fault the schedule put on a call."""

    key: str
    ordinal: int
    kind: FaultKind


Resolver = Callable[[str], tuple[str, "re.Pattern[str] | None"]]
"""Turns a key as a test writes it into (canonical key, optional path filter)."""


@dataclass
class _Rule:
    fault: Fault
    key: str | None
    """Canonical key, or None for any key (with ``http_method``/``path`` filters)."""
    http_method: str | None = None
    path: re.Pattern[str] | None = None
    first: int | None = None
    """Ordinal range start (1-based); None: the next ``remaining`` calls."""
    remaining: int | None = 1
    """Calls left to fault; None: no end."""

    def matches(self, key: str, ordinal: int, path: str) -> bool:
        if self.key is not None and key != self.key:
            return False
        if self.http_method is not None and key.split(" ", 1)[0] != self.http_method:
            return False
        if self.path is not None and not self.path.search(path):
            return False
        if self.first is not None:
            if ordinal < self.first:
                return False
            if self.remaining is not None and ordinal >= self.first + self.remaining:
                return False
        elif self.remaining is not None and self.remaining <= 0:
            return False
        return True

    @property
    def spent(self) -> bool:
        return self.first is None and self.remaining is not None and self.remaining <= 0


@dataclass
class _RandomSchedule:
    seed: int | str
    keys: frozenset[str]
    odds: list[tuple[FaultKind, float]]
    retry_after: float
    delay: float
    slow_delay: float
    first: int
    last: int | None
    max_run: int | None
    plans: dict[str, list[FaultKind | None]] = field(default_factory=dict)
    rngs: dict[str, random.Random] = field(default_factory=dict)

    def kind_for(self, key: str, ordinal: int) -> FaultKind | None:
        """The kind for a key's ``ordinal``-th call (drawn lazily, one draw per call)."""
        if key not in self.keys or ordinal < self.first:
            return None
        if self.last is not None and ordinal > self.last:
            return None
        plan = self.plans.setdefault(key, [])
        # A string seed hashes with SHA-512 in random.seed: stable across processes.
        rng = self.rngs.setdefault(key, random.Random(f"{self.seed}/{key}"))
        index = ordinal - self.first
        while len(plan) <= index:
            draw = rng.random()
            chosen: FaultKind | None = None
            total = 0.0
            for kind, p in self.odds:
                total += p
                if draw < total:
                    chosen = kind
                    break
            run = self.max_run
            if (
                chosen is not None
                and run is not None
                and len(plan) >= run
                and all(k is not None for k in plan[-run:])
            ):
                chosen = None  # give the client a success after max_run faults
            plan.append(chosen)
        return plan[index]

    def fault(self, kind: FaultKind) -> Fault:
        if kind == "slow":
            return Fault(kind, delay=self.slow_delay)
        return Fault(kind, retry_after=self.retry_after, delay=self.delay)


class FaultSchedule:
    """Faults per key, deterministic, with a record of what was injected.

    A fake creates one (``fake.faults``), calls :meth:`arrive` when a call comes in and
    :meth:`take` at the point where it would start to handle it. Tests use
    :meth:`add`, :meth:`schedule`, :meth:`clear` and read :attr:`injected`,
    :attr:`log` or :meth:`count`.
    """

    def __init__(
        self,
        *,
        kinds: Collection[str] = ALL_KINDS,
        resolve: Resolver | None = None,
        known: Callable[[str], bool] | None = None,
    ) -> None:
        """``kinds``: the kinds this platform can produce; ``resolve``: how a key as
        written maps to a canonical key (and an optional path filter); ``known``: which
        canonical keys exist (so a typo in a key fails loudly instead of never firing)."""
        self.kinds = frozenset(kinds)
        self._resolve: Resolver = resolve or (lambda key: (key, None))
        self._known = known
        self._rules: list[_Rule] = []
        self._random: list[_RandomSchedule] = []
        self.seen: Counter[str] = Counter()
        """Calls received per canonical key (the last ordinal handed out)."""
        self.injected: Counter[tuple[str, str]] = Counter()
        """Faults injected per (canonical key, kind)."""
        self.log: list[Injection] = []
        """Every injected fault, in the order the calls reached the fault check."""

    # ------------------------------------------------------------------ scripting

    def add(
        self,
        key: str,
        kind: FaultKind = "429",
        *,
        count: int | None = 1,
        at: int | None = None,
        retry_after: float | None = 1.0,
        delay: float | None = None,
        status: int | None = None,
        error: str | None = None,
        body: Any = None,
    ) -> None:
        """Fault calls of ``key`` with ``kind``.

        ``at=None``: the next ``count`` calls that reach the fault check; ``at=k``: the
        calls with ordinals ``k .. k + count - 1`` (1-based, counted since the fake
        started); ``count=None``: every call (from ``at`` on) until :meth:`clear`.
        ``delay`` defaults to 1 s for ``slow`` and 0 otherwise."""
        self._check_kind(kind)
        if kind == "error" and status is None:
            raise ValueError("an 'error' fault needs a status")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for every call)")
        if at is not None and at < 1:
            raise ValueError("ordinals start at 1")
        canonical, path = self._resolve(key)
        self._check_key(canonical)
        wait = delay if delay is not None else (DEFAULT_SLOW_DELAY if kind == "slow" else 0.0)
        fault = Fault(kind, retry_after, wait, status, error, body)
        self._rules.append(_Rule(fault, canonical, path=path, first=at, remaining=count))

    def add_rule(
        self,
        fault: Fault,
        *,
        key: str | None = None,
        http_method: str | None = None,
        path: re.Pattern[str] | None = None,
        count: int | None = 1,
    ) -> None:
        """A rule without key resolution, for the fakes' older helpers (``fail()``,
        ``fail_next()``): the next ``count`` calls matching every filter given."""
        self._rules.append(_Rule(fault, key, http_method, path, None, count))

    def schedule(
        self,
        seed: int | str,
        keys: Iterable[str],
        *,
        p_429: float = 0.0,
        p_500: float = 0.0,
        p_internal_error: float = 0.0,
        p_slow: float = 0.0,
        p_drop: float = 0.0,
        retry_after: float = 1.0,
        delay: float = 0.0,
        slow_delay: float = DEFAULT_SLOW_DELAY,
        first: int = 1,
        last: int | None = None,
        max_run: int | None = None,
    ) -> None:
        """Random faults on ``keys``: each call with an ordinal in ``first..last`` gets
        a fault with the given probabilities (at most one). Same seed, same faults.

        ``max_run=n`` caps the faults in a row on one key at ``n`` (the next call then
        goes through), for clients that give up after a few retries. ``delay`` is the
        wait before 429/500/internal_error/drop answers, ``slow_delay`` the wait of a
        ``slow`` one."""
        odds: list[tuple[FaultKind, float]] = [
            ("429", p_429),
            ("500", p_500),
            ("internal_error", p_internal_error),
            ("slow", p_slow),
            ("drop", p_drop),
        ]
        for kind, p in odds:
            if p < 0:
                raise ValueError(f"p_{kind} is negative")
            if p > 0:
                self._check_kind(kind)
        if sum(p for _, p in odds) > 1.0 + 1e-9:
            raise ValueError("the probabilities add up to more than 1")
        canonical: set[str] = set()
        for key in keys:
            resolved, path = self._resolve(key)
            if path is not None:
                raise ValueError(f"random schedules take route keys, not paths: {key!r}")
            self._check_key(resolved)
            canonical.add(resolved)
        self._random.append(
            _RandomSchedule(
                seed=seed,
                keys=frozenset(canonical),
                odds=[(k, p) for k, p in odds if p > 0],
                retry_after=retry_after,
                delay=delay,
                slow_delay=slow_delay,
                first=first,
                last=last,
                max_run=max_run,
            )
        )

    def clear(self, key: str | None = None) -> None:
        """Drops every rule and random schedule (or only the rules for ``key``). What
        was injected so far stays recorded."""
        if key is None:
            self._rules.clear()
            self._random.clear()
            return
        canonical, _ = self._resolve(key)
        self._rules = [r for r in self._rules if r.key != canonical]
        for schedule in self._random:
            schedule.keys = schedule.keys - {canonical}

    def planned(self, key: str, calls: int) -> list[FaultKind | None]:
        """What the random schedules pick for ordinals ``1..calls`` of ``key`` (rules
        added with :meth:`add` left out): to show a seed's plan, or assert on it."""
        canonical, _ = self._resolve(key)
        return [self._random_kind(canonical, n)[0] for n in range(1, calls + 1)]

    # ------------------------------------------------------------------ the fakes' side

    def arrive(self, key: str) -> int:
        """A call of canonical ``key`` came in: its ordinal (1-based)."""
        self.seen[key] += 1
        return self.seen[key]

    def take(self, key: str, ordinal: int, path: str = "") -> Fault | None:
        """The fault for this call, if any (and records it)."""
        fault: Fault | None = None
        for rule in self._rules:
            if rule.matches(key, ordinal, path):
                fault = rule.fault
                if rule.first is None and rule.remaining is not None:
                    rule.remaining -= 1
                break
        self._rules = [r for r in self._rules if not r.spent]
        if fault is None:
            kind, schedule = self._random_kind(key, ordinal)
            if kind is not None and schedule is not None:
                fault = schedule.fault(kind)
        if fault is not None:
            self.injected[(key, fault.kind)] += 1
            self.log.append(Injection(key, ordinal, fault.kind))
        return fault

    # ------------------------------------------------------------------ reading

    def count(self, key: str | None = None, kind: str | None = None) -> int:
        """Faults injected so far, optionally for one key and/or one kind."""
        canonical = self._resolve(key)[0] if key is not None else None
        return sum(
            n
            for (k, what), n in self.injected.items()
            if (canonical is None or k == canonical) and (kind is None or what == kind)
        )

    # ------------------------------------------------------------------ internals

    def _random_kind(
        self, key: str, ordinal: int
    ) -> tuple[FaultKind | None, _RandomSchedule | None]:
        # Every schedule draws for every call of its keys, so adding a schedule never
        # shifts the draws of another one.
        found: tuple[FaultKind | None, _RandomSchedule | None] = (None, None)
        for schedule in self._random:
            kind = schedule.kind_for(key, ordinal)
            if kind is not None and found[0] is None:
                found = (kind, schedule)
        return found

    def _check_kind(self, kind: str) -> None:
        if kind not in ALL_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(ALL_KINDS)}")
        if kind not in self.kinds:
            raise ValueError(f"this platform cannot answer {kind!r}")

    def _check_key(self, key: str) -> None:
        if self._known is not None and not self._known(key):
            raise ValueError(f"unknown key {key!r}: no such method or route in the fake")


def kind_for_status(status: int, error: str | None = None) -> FaultKind:
    """The kind an older helper's (status, error) amounts to, for the record."""
    if status == 429:
        return "429"
    if status == 500:
        return "500"
    if status == 200 and error == "internal_error":
        return "internal_error"
    return "error"


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up, as Slack and Discord send ``Retry-After`` (slack_sdk's
    retry handler ``int()``s the header, so a fraction would crash it)."""
    whole = int(seconds)
    return str(whole if whole == seconds else whole + 1)


__all__ = [
    "ALL_KINDS",
    "DEFAULT_SLOW_DELAY",
    "Fault",
    "FaultKind",
    "FaultSchedule",
    "Injection",
    "kind_for_status",
    "retry_after_header",
]
