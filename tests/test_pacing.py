from __future__ import annotations

import pytest

from core.reply.pacing import IMMEDIATE, Pacing


def test_interval_counts_from_the_end_of_the_last_update() -> None:
    pacing = Pacing(min_interval=1.0)
    assert pacing.due(now=10.4, last_update_end=10.0, new_chars=50) == pytest.approx(0.6)
    assert pacing.due(now=11.0, last_update_end=10.0, new_chars=1) == 0.0


def test_character_threshold_waits_up_to_max_wait() -> None:
    pacing = Pacing(min_interval=1.0, min_chars=20, max_wait=3.0)
    assert pacing.due(now=11.5, last_update_end=10.0, new_chars=5) == pytest.approx(1.5)
    assert pacing.due(now=11.5, last_update_end=10.0, new_chars=20) == 0.0
    assert pacing.due(now=13.0, last_update_end=10.0, new_chars=1) == 0.0


def test_immediate_never_waits() -> None:
    assert IMMEDIATE.due(now=0.0, last_update_end=0.0, new_chars=1) == 0.0


def test_negative_values_are_rejected() -> None:
    with pytest.raises(ValueError):
        Pacing(min_interval=-1)
