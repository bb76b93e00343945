"""The job state machine."""

from __future__ import annotations

import pytest

from ganft.states import (
    JOB_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    InvalidTransition,
    can_transition,
    check_transition,
    sources,
)


def test_terminal_states_never_change() -> None:
    """No transition leaves succeeded, failed or cancelled."""
    for terminal in TERMINAL_STATUSES:
        for target in JOB_STATUSES:
            assert not can_transition(terminal, target)
            with pytest.raises(InvalidTransition):
                check_transition(terminal, target)


def test_expected_paths() -> None:
    """Claim, finish, cancel (both kinds) and the reaper's return to the queue are allowed; skipping is not."""
    for current, target in [
        ("queued", "running"),
        ("queued", "cancelled"),
        ("running", "succeeded"),
        ("running", "cancelling"),
        ("running", "queued"),
        ("cancelling", "cancelled"),
    ]:
        check_transition(current, target)
    assert not can_transition("queued", "succeeded")
    assert not can_transition("cancelling", "running")
    assert set(TRANSITIONS) == set(JOB_STATUSES)
    assert sources("cancelled") == ("queued", "running", "cancelling")
