"""with_store_retries: retried while the store is unavailable, within a time budget (injected clock)."""

from __future__ import annotations

import pytest

from ganft.store import StoreUnavailable, with_store_retries


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_retries_with_backoff_until_it_works() -> None:
    clock, calls = FakeClock(), []

    def flaky() -> str:
        calls.append(clock.now)
        if len(calls) < 4:
            raise StoreUnavailable("S3 store unavailable while x: connection refused")
        return "done"

    assert with_store_retries(flaky, budget_s=30, what="t", sleep=clock.sleep, clock=clock) == "done"
    assert clock.sleeps == [1.0, 2.0, 4.0] and len(calls) == 4


def test_gives_up_when_the_budget_is_spent_and_never_retries_other_errors() -> None:
    clock = FakeClock()

    def down() -> None:
        raise StoreUnavailable("still down")

    with pytest.raises(StoreUnavailable, match="still down"):
        with_store_retries(down, budget_s=5, what="t", sleep=clock.sleep, clock=clock)
    assert sum(clock.sleeps) == 5 and clock.sleeps == [1.0, 2.0, 2.0]  # the last wait is cut to the budget

    tries = []

    def missing() -> None:
        tries.append(1)
        raise FileNotFoundError("datasets/x/data")

    with pytest.raises(FileNotFoundError):
        with_store_retries(missing, budget_s=60, what="t", sleep=clock.sleep, clock=clock)
    assert tries == [1]
