"""The service end to end: real HTTP server, real worker process, real training, real downloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganft.client import Client
from tests.e2e import flows
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_ssgan_on_postgres_and_redis(stack: Stack, tmp_path: Path) -> None:
    with Client(stack.url, stack.key, timeout=60) as api:
        flows.ssgan_digits(api, tmp_path)


def test_adapt_on_postgres_and_redis(stack: Stack, tmp_path: Path) -> None:
    with Client(stack.url, stack.key, timeout=60) as api:
        flows.adapt_digits(api, tmp_path)


def test_ssgan_on_the_embedded_default(embedded_stack: Stack, tmp_path: Path) -> None:
    """`ganft up`'s stack (SQLite, filesystem broker, solo worker) runs the same flow."""
    with Client(embedded_stack.url, embedded_stack.key, timeout=60) as api:
        flows.ssgan_digits(api, tmp_path)
