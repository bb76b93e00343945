"""Webhook signing in the Standard Webhooks style (https://www.standardwebhooks.com/).

Each message carries three headers:
    webhook-id         a unique message id, the same on every retry (receivers dedupe on it)
    webhook-timestamp  unix seconds of this attempt (receivers reject old ones: replay protection)
    webhook-signature  "v1," + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))
The key is the secret's bytes: for a `whsec_<base64>` secret (what ganft generates per tenant,
as the standard's libraries do) the base64-decoded bytes, for any other string its UTF-8 bytes
(GANFT_WEBHOOK_SECRET may be either).

Targets: in a multi-tenant service a webhook URL must not make the worker POST into the
service's own network (databases, admin ports, a cloud's metadata service). Unless
GANFT_WEBHOOK_ALLOW_PRIVATE is set, only public unicast addresses are allowed: the API refuses
a URL whose host is a literal non-public address or `localhost` (`check_literal_target`), and
the sender resolves the host at every attempt, refuses any non-public answer and connects to
the very address it checked (`resolve_target`), so a DNS answer that changes between the check
and the connection (DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24  # 192 bits, as the standard's libraries generate
TOLERANCE_S = 300  # how old (or far in the future) a timestamp `verify` accepts


class InvalidSignature(Exception):
    """A webhook whose signature, id or timestamp does not check out."""


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret (see the module docstring)."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value of one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers plus the JSON content type."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def verify(secret: str, received: Mapping[str, str], body: bytes, *, now: float | None = None) -> None:
    """What a receiver does: check the signature (any of the space-separated `v1,` ones) and the age.

    Raises InvalidSignature. `received` must be case-insensitive or lower-case keyed.
    """
    try:
        msg_id = received["webhook-id"]
        ts = int(received["webhook-timestamp"])
        signatures = received["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise InvalidSignature(f"missing or malformed webhook header: {exc}") from None
    if abs((time.time() if now is None else now) - ts) > TOLERANCE_S:
        raise InvalidSignature("the timestamp is too far from now")
    expected = sign(secret, msg_id, ts, body)
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise InvalidSignature("no signature matches")


MAX_URL_LENGTH = 2000  # bytes of a webhook URL (jobs and tenant defaults)


def check_url(url: str) -> str:
    """A webhook URL as given, or ValueError: absolute http(s) with a host, at most MAX_URL_LENGTH."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if any(c.isspace() for c in url):
        raise ValueError("must not contain whitespace")
    return url


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOW_PRIVATE_HINT = "set GANFT_WEBHOOK_ALLOW_PRIVATE=1 to allow private targets"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix: the last 32 bits are an IPv4 address


class ForbiddenTarget(ValueError):
    """A webhook target that is not a public address (see the module docstring)."""


def non_public_reason(ip: IPAddress) -> str | None:
    """Why `ip` is not a public unicast address (e.g. "loopback"), or None when it is one.

    IPv4 addresses embedded in IPv6 (`::ffff:10.0.0.1`, NAT64 `64:ff9b::a00:1`) are judged as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return non_public_reason(ip.ipv4_mapped)
        if ip in _NAT64:
            return non_public_reason(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata services live there)"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-public (reserved or shared)"
    return None


def _literal_address(host: str) -> IPAddress | None:
    """The address a host name spells literally, also in the legacy IPv4 forms that resolvers
    accept (`127.1`, `2130706433`, `0x7f.0.0.1`); None for a DNS name."""
    try:
        return ipaddress.ip_address(unquote(host).split("%", 1)[0])  # an IPv6 zone id is not part of it
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_literal_target(url: str) -> str:
    """`url`, or ForbiddenTarget when its host is `localhost` or a literal non-public address.

    A DNS name is not resolved here (the answer may change before delivery); the sender checks it."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise ForbiddenTarget(f"must not point at this machine ({host}); {ALLOW_PRIVATE_HINT}")
    ip = _literal_address(host)
    reason = non_public_reason(ip) if ip is not None else None
    if reason:
        raise ForbiddenTarget(f"must not point at {ip} ({reason} address); {ALLOW_PRIVATE_HINT}")
    return url


def resolve_target(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to for `host`: the first one it resolves to.

    Raises ForbiddenTarget when any answer is not public (unless `allow_private`): one bad answer
    is enough, as a name that mixes them is an attempt to slip through. socket.gaierror when the
    name does not resolve."""
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses = [str(sockaddr[0]) for *_, sockaddr in answers]
    if not allow_private:
        for address in addresses:
            reason = non_public_reason(ipaddress.ip_address(address.split("%", 1)[0]))
            if reason:
                raise ForbiddenTarget(f"{host} resolves to {address} ({reason} address); {ALLOW_PRIVATE_HINT}")
    return addresses[0]
