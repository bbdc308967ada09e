"""The fault schedule both fake platforms share does exactly what a test scripts.

Invariant checkers will compare what a bot did against what was injected, and a
seeded run is only worth something if it can be replayed: so the schedule's counting
(next N calls, ordinal ranges, every call), its seeded draws and its record are
checked here on their own, without a server; the fakes' tests check the answers.
"""

from __future__ import annotations

import re

import pytest

from tests.fakes.faults import (
    Fault,
    FaultSchedule,
    Injection,
    kind_for_status,
    retry_after_header,
)


def run(schedule: FaultSchedule, key: str, calls: int) -> list[str | None]:
    """What ``calls`` calls of ``key`` get, as a fake would ask."""
    out: list[str | None] = []
    for _ in range(calls):
        fault = schedule.take(key, schedule.arrive(key))
        out.append(fault.kind if fault else None)
    return out


def test_next_calls_then_nothing() -> None:
    faults = FaultSchedule()
    faults.add("chat.update", "500", count=2)
    assert run(faults, "chat.update", 4) == ["500", "500", None, None]
    assert run(faults, "chat.postMessage", 1) == [None]  # other keys are untouched


def test_next_calls_count_from_when_the_rule_is_added() -> None:
    faults = FaultSchedule()
    run(faults, "chat.update", 3)
    faults.add("chat.update", "drop")
    assert run(faults, "chat.update", 2) == ["drop", None]
    assert faults.log == [Injection("chat.update", 4, "drop")]


def test_ordinal_range_is_absolute() -> None:
    """``at=k`` names calls by their ordinal since the fake started, so a test can say
    "the 3rd and 4th append fail" whatever happened before it added the rule."""
    faults = FaultSchedule()
    faults.add("chat.appendStream", "429", at=3, count=2)
    assert run(faults, "chat.appendStream", 6) == [None, None, "429", "429", None, None]


def test_every_call_until_cleared() -> None:
    faults = FaultSchedule()
    faults.add("chat.update", "500", count=None)
    assert run(faults, "chat.update", 3) == ["500"] * 3
    faults.clear("chat.update")
    assert run(faults, "chat.update", 1) == [None]
    assert faults.count("chat.update", "500") == 3  # the record survives clear()


def test_rules_apply_in_order_one_fault_per_call() -> None:
    faults = FaultSchedule()
    faults.add("m", "429", count=1)
    faults.add("m", "500", count=1)
    assert run(faults, "m", 3) == ["429", "500", None]


def test_fault_carries_its_parameters() -> None:
    faults = FaultSchedule()
    faults.add("m", "429", retry_after=2.5)
    faults.add("m", "slow")
    faults.add("m", "drop", delay=0.2)
    first, second, third = (faults.take("m", faults.arrive("m")) for _ in range(3))
    assert first == Fault("429", retry_after=2.5)
    assert second is not None and second.kind == "slow" and second.delay == 1.0
    assert third is not None and third.kind == "drop" and third.delay == 0.2


def test_seeded_schedule_is_deterministic_per_key() -> None:
    """Same seed, same faults; and the draw for a key's n-th call doesn't depend on how
    calls to other keys interleave (concurrent replies would otherwise reshuffle it)."""

    def plan(seed: int, interleave: bool) -> list[str | None]:
        faults = FaultSchedule()
        faults.schedule(seed, ["a", "b"], p_429=0.3, p_500=0.2, p_drop=0.1)
        out: list[str | None] = []
        for _ in range(40):
            if interleave:
                run(faults, "b", 2)
            out += run(faults, "a", 1)
        return out

    first = plan(7, interleave=False)
    assert first == plan(7, interleave=True)
    assert first != plan(8, interleave=False)
    assert {"429", "500", "drop", None} == set(first)

    faults = FaultSchedule()
    faults.schedule(7, ["a"], p_429=0.3, p_500=0.2, p_drop=0.1)
    assert faults.planned("a", 40) == first
    assert faults.planned("b", 3) == [None, None, None]  # not scheduled


def test_seeded_schedule_window_and_max_run() -> None:
    faults = FaultSchedule()
    faults.schedule(1, ["a"], p_500=1.0, first=3, last=6, max_run=2)
    assert faults.planned("a", 8) == [None, None, "500", "500", None, "500", None, None]


def test_explicit_rules_win_over_the_random_schedule() -> None:
    faults = FaultSchedule()
    faults.schedule(3, ["a"], p_500=1.0)
    faults.add("a", "drop")
    assert run(faults, "a", 2) == ["drop", "500"]
    assert faults.injected == {("a", "drop"): 1, ("a", "500"): 1}
    assert faults.count(kind="500") == 1 and faults.count("a") == 2


def test_keys_and_kinds_are_checked() -> None:
    """A typo in a method name must fail loudly, not silently never fire."""
    faults = FaultSchedule(kinds={"429", "500"}, known=lambda key: key == "chat.update")
    with pytest.raises(ValueError, match="unknown key"):
        faults.add("chat.updat", "429")
    with pytest.raises(ValueError, match="cannot answer"):
        faults.add("chat.update", "internal_error")
    with pytest.raises(ValueError, match="unknown fault kind"):
        faults.add("chat.update", "teapot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="more than 1"):
        faults.schedule(0, ["chat.update"], p_429=0.7, p_500=0.7)
    with pytest.raises(ValueError, match="needs a status"):
        FaultSchedule().add("m", "error")


def test_resolver_and_path_filters() -> None:
    """A platform can map the keys tests write to its own, and narrow a rule to some
    paths (Discord's ``@original``); the ordinal stays the route's."""
    faults = FaultSchedule(resolve=lambda key: ("GET x/{id}", re.compile("^x/7$")))
    faults.add("GET /x/7", "500", count=None)
    assert faults.take("GET x/{id}", faults.arrive("GET x/{id}"), "x/1") is None
    fault = faults.take("GET x/{id}", faults.arrive("GET x/{id}"), "x/7")
    assert fault is not None and faults.log == [Injection("GET x/{id}", 2, "500")]


def test_older_helpers_rules() -> None:
    faults = FaultSchedule()
    faults.add_rule(Fault("error", status=503), http_method="POST", path=re.compile("msgs"))
    assert faults.take("GET a", 1, "msgs") is None
    assert faults.take("POST a", 1, "other") is None
    fault = faults.take("POST a", 2, "chan/msgs")
    assert fault is not None and fault.status == 503
    assert faults.take("POST a", 3, "chan/msgs") is None


def test_helpers() -> None:
    assert [kind_for_status(s) for s in (429, 500, 503, 200)] == ["429", "500", "error", "error"]
    assert kind_for_status(200, "internal_error") == "internal_error"
    assert [retry_after_header(x) for x in (0, 1, 1.0, 0.05, 2.5)] == ["0", "1", "1", "1", "3"]
