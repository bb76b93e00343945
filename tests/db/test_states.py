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
    assert sources("cancelled") == ("queued", "running", "cancelling", "paused")


def test_pause_paths() -> None:
    """A running job pauses through `pausing`, a queued one at once; only a paused one resumes (to the queue)."""
    for current, target in [
        ("queued", "paused"),
        ("running", "pausing"),
        ("pausing", "paused"),
        ("pausing", "cancelling"),
        ("pausing", "succeeded"),
        ("pausing", "queued"),  # preempted: checkpointed, then waits for a worker again
        ("paused", "queued"),
        ("paused", "cancelled"),
    ]:
        check_transition(current, target)
    assert not can_transition("paused", "running")  # a resumed job is claimed from the queue like any other
    assert not can_transition("cancelling", "pausing")
    assert not can_transition("pausing", "running")
    assert sources("paused") == ("queued", "pausing")
