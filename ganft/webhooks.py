"""Webhook signing in the Standard Webhooks style (https://www.standardwebhooks.com/).

Each message carries three headers:
    webhook-id         a unique message id, the same on every retry (receivers dedupe on it)
    webhook-timestamp  unix seconds of this attempt (receivers reject old ones: replay protection)
    webhook-signature  "v1," + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))
The key is the secret's bytes: for a `whsec_<base64>` secret (what ganft generates per tenant,
as the standard's libraries do) the base64-decoded bytes, for any other string its UTF-8 bytes
(GANFT_WEBHOOK_SECRET may be either).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

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
    from urllib.parse import urlsplit

    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if any(c.isspace() for c in url):
        raise ValueError("must not contain whitespace")
    return url
