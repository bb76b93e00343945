"""Webhook targets (SSRF): by default a tenant cannot make the worker POST to loopback, private,
link-local (cloud metadata) or other non-public addresses; GANFT_WEBHOOK_ALLOW_PRIVATE allows them.

The API refuses literal addresses and `localhost` at POST time (422 naming `webhook_url`); the
sender resolves every host at each attempt, refuses non-public answers (a failed delivery with
the reason) and connects to the address it checked (no second lookup: DNS rebinding)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from ganft.settings import Settings
from tests.webhooks.helpers import cancelled_job, dataset
from tests.webhooks.receiver import Receiver
from worker.webhooks import deliver_due

PRIVATE_URLS = [
    "http://127.0.0.1:8080/hook",
    "http://10.1.2.3/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:8080/hook",
    "http://localhost:8080/hook",
    "http://2130706433/hook",  # 127.0.0.1 in the one-number form resolvers accept
    "http://[::ffff:192.168.0.1]/hook",  # IPv4-mapped IPv6
    "http://100.64.0.1/hook",  # carrier-grade NAT (shared address space)
]


@pytest.fixture
def strict(settings: Settings) -> Settings:
    """The default: private targets refused (the conftest's `settings` allows them)."""
    return settings.model_copy(update={"webhook_allow_private": False})


@pytest.fixture
def strict_client(strict: Settings) -> Iterator[TestClient]:
    from api.main import create_app

    app: FastAPI = create_app(strict)
    with TestClient(app) as client:
        yield client


def test_the_default_refuses_private_targets() -> None:
    assert Settings().webhook_allow_private is False


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_post_refuses_private_literal_targets(
    strict_client: TestClient, headers: dict[str, str], engine: Engine, url: str
) -> None:
    body = {"method": "ssgan", "dataset_id": dataset(engine), "webhook_url": url}
    response = strict_client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["field"] == "webhook_url" and "GANFT_WEBHOOK_ALLOW_PRIVATE" in error["message"], error


def test_post_accepts_public_targets(strict_client: TestClient, headers: dict[str, str], engine: Engine) -> None:
    """A DNS name is not resolved at POST (its answer may change): the sender checks it."""
    for url in ("https://hooks.example.com/ganft", "http://93.184.215.14:8080/x", "https://[2606:4700::1]/x"):
        body = {"method": "ssgan", "dataset_id": dataset(engine), "webhook_url": url}
        response = strict_client.post("/v1/jobs", json=body, headers=headers)
        assert response.status_code == 201, response.text
        assert response.json()["webhook_url"] == url


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest", "http://localhost:9/x"])
def test_cli_refuses_a_private_tenant_default(
    ganft_env: dict[str, str], make_key: Callable[[str], str], url: str
) -> None:
    make_key("acme")
    env = {k: v for k, v in ganft_env.items() if k != "GANFT_WEBHOOK_ALLOW_PRIVATE"}
    done = subprocess.run([sys.executable, "-m", "ganft.cli", "admin", "set-webhook", "--tenant", "acme", url],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "GANFT_WEBHOOK_ALLOW_PRIVATE" in done.stderr, done.stderr


@pytest.mark.parametrize("url", [*PRIVATE_URLS[:4], "http://localhost:{port}/named"])
def test_delivery_refuses_private_targets(
    client: TestClient, headers: dict[str, str], engine: Engine, strict: Settings,
    receiver: Callable[[list[int]], Receiver], url: str,
) -> None:  # fmt: skip
    """A job whose URL was accepted while private targets were allowed (or a name that resolves to
    loopback) is refused at delivery by a strict worker: failed at the first attempt, with the
    reason; nothing reaches the receiver listening on 127.0.0.1."""
    hook = receiver([204])
    port = hook.url.split(":")[2].split("/")[0]
    job = cancelled_job(client, headers, engine, webhook_url=url.format(port=port))
    assert list(deliver_due(strict).outcomes.values()) == ["failed"]
    (delivery,) = client.get(f"/v1/jobs/{job['id']}/webhooks", headers=headers).json()["data"]
    assert delivery["status"] == "failed" and delivery["attempts"] == 1 and delivery["next_attempt_at"] is None
    assert delivery["last_error"].startswith("refused: ") and "GANFT_WEBHOOK_ALLOW_PRIVATE" in delivery["last_error"]
    assert hook.received == []


class RebindingResolver:
    """A hostile DNS for one name: its first answer is `first`, every later one `later`
    (an injected failure: what an attacker's DNS server does for a rebinding attack)."""

    def __init__(self, name: str, first: str, later: str) -> None:
        self.name, self.first, self.later = name, first, later
        self.lookups = 0
        self._real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != self.name:
            return self._real(host, port, *args, **kwargs)
        self.lookups += 1
        return self._real(self.first if self.lookups == 1 else self.later, port, *args, **kwargs)


def test_delivery_connects_to_the_address_it_checked(
    client: TestClient, headers: dict[str, str], engine: Engine, settings: Settings,
    receiver: Callable[[list[int]], Receiver], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The name resolves to the receiver (127.0.0.1, allowed here) once, then to 10.255.255.1: the
    POST still reaches the receiver, after one lookup, with the name in the Host header."""
    hook = receiver([204])
    port = hook.url.split(":")[2].split("/")[0]
    job = cancelled_job(client, headers, engine, webhook_url=f"http://rebind.test:{port}/hooks/ganft")
    resolver = RebindingResolver("rebind.test", first="127.0.0.1", later="10.255.255.1")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    assert list(deliver_due(settings).outcomes.values()) == ["delivered"]
    assert resolver.lookups == 1
    (message,) = hook.received
    assert message.headers["host"] == f"rebind.test:{port}"
    assert (
        message.headers["webhook-id"]
        == client.get(f"/v1/jobs/{job['id']}/webhooks", headers=headers).json()["data"][0]["id"]
    )


def test_delivery_refuses_a_name_whose_first_answer_is_private(
    client: TestClient, headers: dict[str, str], engine: Engine, strict: Settings,
    receiver: Callable[[list[int]], Receiver], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Strict: the name resolves to 169.254.169.254 (the metadata service): refused, nothing sent."""
    hook = receiver([204])
    job = cancelled_job(client, headers, engine, webhook_url="http://metadata.test/latest/meta-data/")
    monkeypatch.setattr(socket, "getaddrinfo", RebindingResolver("metadata.test", "169.254.169.254", "127.0.0.1"))
    assert list(deliver_due(strict).outcomes.values()) == ["failed"]
    (delivery,) = client.get(f"/v1/jobs/{job['id']}/webhooks", headers=headers).json()["data"]
    assert "169.254.169.254" in delivery["last_error"] and "link-local" in delivery["last_error"]
    assert hook.received == []


def _certificates(folder: Path, name: str) -> tuple[Path, ssl.SSLContext]:
    """(CA file, server context) for a certificate of DNS name `name` only (no IP address), signed
    by a CA made here (openssl)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=ganft test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", f"/CN={name}")
    (folder / "leaf.ext").write_text(f"subjectAltName=DNS:{name}\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext")  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "leaf.pem", folder / "leaf.key")
    return folder / "ca.pem", context


def test_https_delivery_checks_the_certificate_against_the_url_name(
    client: TestClient, headers: dict[str, str], engine: Engine, settings: Settings,
    receiver: Callable[..., Receiver], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    """Connecting to the checked address keeps TLS honest: SNI and the certificate check use the
    URL's name. An https receiver on 127.0.0.1 with a certificate for `hooks.test` only: a URL
    naming hooks.test is delivered; one naming other.test (same address) fails the check."""
    ca_file, tls = _certificates(tmp_path, "hooks.test")
    hook = receiver([204], tls=tls)
    port = hook.url.split(":")[2].split("/")[0]
    good = cancelled_job(client, headers, engine, webhook_url=f"https://hooks.test:{port}/hooks/ganft")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # httpx trusts our CA (trust_env)
    monkeypatch.setattr(socket, "getaddrinfo", RebindingResolver("hooks.test", "127.0.0.1", "127.0.0.1"))
    assert list(deliver_due(settings).outcomes.values()) == ["delivered"]
    (message,) = hook.received
    assert message.headers["host"] == f"hooks.test:{port}"

    wrong = cancelled_job(client, headers, engine, webhook_url=f"https://other.test:{port}/hooks/ganft")
    monkeypatch.setattr(socket, "getaddrinfo", RebindingResolver("other.test", "127.0.0.1", "127.0.0.1"))
    assert list(deliver_due(settings).outcomes.values()) == ["pending"]  # retried later, like any failure
    (delivery,) = client.get(f"/v1/jobs/{wrong['id']}/webhooks", headers=headers).json()["data"]
    assert "certificate" in delivery["last_error"].lower(), delivery["last_error"]
    assert len(hook.received) == 1 and good["id"] != wrong["id"]
