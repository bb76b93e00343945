"""A revoked API key stops working at once in an API process that has it cached (Postgres NOTIFY
from `keys.revoke_key`, heard by the process's EventHub, ganft/db/notify.py), and a listener that
lost its connection makes the process forget every cached key (revocations may have been missed)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from fastapi import FastAPI

from api.keycache import KeyCache
from api.main import create_app
from ganft.db.notify import EventHub
from ganft.db.session import session_scope
from ganft.repo import keys
from ganft.security import key_prefix
from ganft.settings import Settings
from tests.api.conftest import Seed, terminate_listeners, wait_until

CACHE_S = 3600.0  # without the push a revoked key would keep working this long


def test_a_revoked_key_is_refused_at_once_despite_the_cache(
    serve: Callable[[FastAPI], str], settings: Settings, make_key: Callable[[str], str], seed: Seed
) -> None:
    """Tried: a key used once (now cached for an hour), then revoked through the repository as
    `ganft admin revoke-key` does. Expect: 401 on the next requests within a second; another key of
    the same tenant keeps working."""
    app = create_app(settings.model_copy(update={"auth_cache_s": CACHE_S}))
    base = serve(app)
    hub: EventHub = app.state.event_hub
    wait_until(lambda: hub.live, "the listener to connect")
    doomed, other = make_key("acme"), make_key("acme")
    for key in (doomed, other):
        assert httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200

    with session_scope(seed.engine) as session:
        assert keys.revoke_key(session, prefix=str(key_prefix(doomed))) == 1
    revoked_at = time.monotonic()
    wait_until(
        lambda: httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {doomed}"}).status_code == 401,
        "the revoked key to be refused",
    )
    assert time.monotonic() - revoked_at < 1.0  # the push, not the hour-long cache
    assert httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_a_listener_that_lost_its_connection_forgets_every_cached_key(
    serve: Callable[[FastAPI], str], settings: Settings, make_key: Callable[[str], str], seed: Seed
) -> None:
    """Tried: cache a key, kill the listener's backend (revocations sent meanwhile would be lost),
    wait for the reconnect. Expect: the cache is empty afterwards, so the next request looks the key
    up again (and still succeeds: the key is valid)."""
    app = create_app(settings.model_copy(update={"auth_cache_s": CACHE_S}))
    base = serve(app)
    hub: EventHub = app.state.event_hub
    cache: KeyCache = app.state.key_cache
    wait_until(lambda: hub.live, "the listener to connect")
    key = make_key("acme")
    assert httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert cache.get(key) is not None

    assert any(terminate_listeners(seed.engine))
    wait_until(lambda: cache.get(key) is None, "the cache to be cleared after the listener lost its connection")
    wait_until(lambda: hub.live, "the listener to reconnect")
    assert httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
