"""Webhooks: Standard Webhooks signatures, delivery with retries to a real HTTP server, tenant defaults."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from ganft import webhooks as signing
from ganft.db.tables import utcnow
from ganft.repo.webhooks import RETRY_DELAYS_S
from ganft.settings import Settings
from tests.webhooks.helpers import cancelled_job, dataset, tenant_secret
from tests.webhooks.receiver import Receiver
from worker.webhooks import deliver_due


def test_signature_is_standard_webhooks() -> None:
    """The signature recomputed by hand from the scheme: HMAC-SHA256 over "id.timestamp.body", base64, "v1,"."""
    secret = signing.generate_secret()
    body = b'{"type":"job.succeeded"}'
    sent = signing.headers(secret, "msg_1", body, timestamp=1_700_000_000)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()).decode()
    assert sent["webhook-signature"] == f"v1,{expected}" and sent["webhook-id"] == "msg_1"
    signing.verify(secret, sent, body, now=1_700_000_010)
    with pytest.raises(signing.InvalidSignature):
        signing.verify(secret, sent, body + b" ", now=1_700_000_010)  # tampered body
    with pytest.raises(signing.InvalidSignature):
        signing.verify(secret, sent, body, now=1_700_000_000 + 3600)  # replayed an hour later
    plain = signing.sign("not-whsec", "m", 1, b"x")  # any other secret: its UTF-8 bytes are the key
    assert plain == "v1," + base64.b64encode(hmac.new(b"not-whsec", b"m.1.x", hashlib.sha256).digest()).decode()


def test_failed_attempt_is_retried_and_recorded(
    client: TestClient, headers: dict[str, str], engine: Engine, settings: Settings, receiver: Callable
) -> None:
    """The receiver answers 500 first, then 204: the retry after 5 s delivers the same message, signed."""
    hook: Receiver = receiver([500, 204])
    job = cancelled_job(client, headers, engine, webhook_url=hook.url)
    assert job["webhook_url"] == hook.url

    first = deliver_due(settings)
    assert first.enqueued == [job["id"]] and list(first.outcomes.values()) == ["pending"]
    (pending,) = client.get(f"/v1/jobs/{job['id']}/webhooks", headers=headers).json()["data"]
    assert pending["attempts"] == 1 and pending["last_status_code"] == 500 and pending["status"] == "pending"
    assert deliver_due(settings).outcomes == {}  # not due yet

    later = utcnow() + dt.timedelta(seconds=RETRY_DELAYS_S[0] + 1)
    assert list(deliver_due(settings, now=later).outcomes.values()) == ["delivered"]
    assert deliver_due(settings, now=later + dt.timedelta(hours=2)).outcomes == {}  # delivered once, never again

    (delivery,) = client.get(f"/v1/jobs/{job['id']}/webhooks", headers=headers).json()["data"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == 2 and delivery["last_status_code"] == 204
    assert delivery["event_type"] == "job.cancelled" and delivery["next_attempt_at"] is None
    assert len(hook.received) == 2
    assert hook.received[0].headers["webhook-id"] == hook.received[1].headers["webhook-id"] == delivery["id"]
    secret = tenant_secret(engine)
    for message in hook.received:
        signing.verify(secret, message.headers, message.body)
    body = json.loads(hook.received[1].body)
    assert body["type"] == "job.cancelled" and body["data"] == job and body["timestamp"]


def test_gives_up_after_the_last_retry(
    client: TestClient, headers: dict[str, str], engine: Engine, settings: Settings, receiver: Callable
) -> None:
    hook: Receiver = receiver([503])
    job = cancelled_job(client, headers, engine, webhook_url=hook.url)
    now = utcnow()
    outcomes: list[str] = []
    for delay in (0, *RETRY_DELAYS_S):
        now += dt.timedelta(seconds=delay + 1)
        outcomes += deliver_due(settings, now=now).outcomes.values()
    assert outcomes == ["pending"] * len(RETRY_DELAYS_S) + ["failed"]
    (delivery,) = client.get(f"/v1/jobs/{job['id']}/webhooks", headers=headers).json()["data"]
    assert delivery["status"] == "failed" and delivery["attempts"] == len(RETRY_DELAYS_S) + 1
    assert delivery["last_error"].startswith("HTTP 503")


def test_tenant_default_from_the_cli(
    client: TestClient, headers: dict[str, str], engine: Engine, settings: Settings,
    ganft_env: dict[str, str], receiver: Callable,
) -> None:  # fmt: skip
    """`ganft admin set-webhook` sets the default and prints the secret; a job naming no URL uses it."""
    hook: Receiver = receiver([200])
    done = subprocess.run([sys.executable, "-m", "ganft.cli", "admin", "set-webhook", "--tenant", "acme", hook.url],
                          env=ganft_env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("whsec_") and secret == tenant_secret(engine)

    job = cancelled_job(client, headers, engine)
    assert job["webhook_url"] == hook.url
    assert list(deliver_due(settings).outcomes.values()) == ["delivered"]
    (message,) = hook.received
    signing.verify(secret, message.headers, message.body)
    assert json.loads(message.body)["data"]["id"] == job["id"]


def test_global_secret_signs_when_set(
    client: TestClient, headers: dict[str, str], engine: Engine, settings: Settings, receiver: Callable
) -> None:
    hook: Receiver = receiver([204])
    job = cancelled_job(client, headers, engine, webhook_url=hook.url)
    configured = settings.model_copy(update={"webhook_secret": "a-real-shared-secret-1234"})
    assert list(deliver_due(configured).outcomes.values()) == ["delivered"]
    (message,) = hook.received
    signing.verify("a-real-shared-secret-1234", message.headers, message.body)
    assert json.loads(message.body)["data"]["id"] == job["id"]


def test_no_webhook_when_none_configured(
    client: TestClient, headers: dict[str, str], engine: Engine, settings: Settings
) -> None:
    job = cancelled_job(client, headers, engine)
    assert job["webhook_url"] is None
    report = deliver_due(settings)
    assert report.enqueued == [] and report.outcomes == {}
    assert client.get(f"/v1/jobs/{job['id']}/webhooks", headers=headers).json()["data"] == []


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hook", "http://", "https://x/" + "a" * 2000])
def test_webhook_url_is_validated(client: TestClient, headers: dict[str, str], engine: Engine, url: str) -> None:
    body = {"method": "ssgan", "dataset_id": dataset(engine), "webhook_url": url}
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["webhook_url"]


def test_set_webhook_refuses_bad_input(ganft_env: dict[str, str], make_key: Callable[[str], str]) -> None:
    make_key("acme")
    for args, message in (
        (["--tenant", "nobody", "http://x/y"], "no tenant"),
        (["--tenant", "acme", "ftp://x"], "http"),
    ):
        done = subprocess.run([sys.executable, "-m", "ganft.cli", "admin", "set-webhook", *args],
                              env=ganft_env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 1 and message in done.stderr, done.stderr
