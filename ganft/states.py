"""The job state machine: which status may follow which. Terminal states never change.

    queued ──claim──> running ──> succeeded | failed
       │                 │  ├──cancel──> cancelling ──> cancelled | succeeded | failed
       │                 │  └──pause───> pausing ──checkpoint──> paused ──resume──> queued
       │                 │                  │                      └──cancel──> cancelled
       │                 │                  ├──checkpoint, preempted──> queued
       │                 │                  └──cancel──> cancelling (or succeeded | failed first)
       │                 └──lease expired (reaper)──> queued (attempt + 1)
       ├──pause──> paused
       └──cancel / unusable inputs──> cancelled | failed

`pausing` is held by a worker like `running`: the trainer checkpoints and stops, the worker
records `paused` and is free; a worker lost while pausing leaves the job `paused` (its newest
stored checkpoint is where it resumes). A job preempted for a waiting `high` one (GANFT_PREEMPTION,
ganft/repo/preemption.py) pauses the same way and then goes back to `queued` instead of `paused`.

Every status change in the service is a compare-and-set (`UPDATE ... WHERE status = <from>`),
and the `<from>` states allowed for a target come from `sources(target)`.
"""

from __future__ import annotations

from ganft.db.tables import JOB_STATUSES, TERMINAL_STATUSES

__all__ = [
    "JOB_STATUSES",
    "TERMINAL_STATUSES",
    "ACTIVE_STATUSES",
    "TRANSITIONS",
    "InvalidTransition",
    "can_transition",
    "check_transition",
    "is_terminal",
    "sources",
]

# queued, running, cancelling, pausing, paused
ACTIVE_STATUSES = tuple(s for s in JOB_STATUSES if s not in TERMINAL_STATUSES)

TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled", "failed", "paused"}),
    # running -> queued: the reaper returns a job whose lease expired (the next attempt resumes).
    "running": frozenset({"succeeded", "failed", "cancelling", "cancelled", "queued", "pausing"}),
    # The trainer may finish (or fail) before it notices the cancel request.
    "cancelling": frozenset({"cancelled", "succeeded", "failed"}),
    # Likewise for a pause; a cancel overrides it; a worker that shuts down meanwhile still pauses.
    # pausing -> queued: a preempted job, once checkpointed, waits for a worker again.
    "pausing": frozenset({"paused", "queued", "cancelling", "succeeded", "failed"}),
    "paused": frozenset({"queued", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


class InvalidTransition(Exception):
    """A status change the state machine forbids (e.g. anything out of a terminal state)."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"a job cannot go from {current!r} to {target!r}")
        self.current = current
        self.target = target


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def check_transition(current: str, target: str) -> None:
    """Raise InvalidTransition unless `current -> target` is allowed."""
    if not can_transition(current, target):
        raise InvalidTransition(current, target)


def sources(target: str) -> tuple[str, ...]:
    """The statuses a job may be in for a compare-and-set to `target` (in JOB_STATUSES order)."""
    return tuple(s for s in JOB_STATUSES if target in TRANSITIONS[s])
