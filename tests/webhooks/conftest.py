"""The webhook tests deliver to a real receiver on 127.0.0.1 (tests/webhooks/receiver.py), which the
default settings refuse as a target (GANFT_WEBHOOK_ALLOW_PRIVATE, ganft/webhooks.py): here the API,
the delivery loop and the CLI allow private targets. test_targets.py builds strict ones itself."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import pytest

from ganft.settings import Settings
from tests.webhooks.receiver import Receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True})


@pytest.fixture
def ganft_env(ganft_env: dict[str, str]) -> dict[str, str]:
    return {**ganft_env, "GANFT_WEBHOOK_ALLOW_PRIVATE": "1"}


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    """receiver(codes, tls=None) -> a started Receiver answering `codes` in order (https with the
    server context `tls`); all are shut down at teardown."""
    servers = []

    def start(codes: list[int], tls: ssl.SSLContext | None = None) -> Receiver:
        r = Receiver(codes, tls=tls)
        servers.append(r.start())
        return r

    yield start
    for server in servers:
        server.shutdown()
