"""API keys: `gft_<prefix>_<secret>`. Only the sha256 of the whole key is stored.

The prefix (8 hex characters) is public: it names the key in listings and in
`ganft admin revoke-key PREFIX`. The secret carries 256 bits of randomness, so a plain
sha256 (no slow KDF) is enough: nobody can brute-force a random 256-bit secret.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

KEY_SCHEME = "gft"
PREFIX_BYTES = 4  # 8 hex characters
SECRET_BYTES = 32  # 256 bits
_KEY_RE = re.compile(r"^gft_([0-9a-f]{8})_([A-Za-z0-9_-]{20,100})$")


@dataclass(frozen=True)
class NewKey:
    prefix: str
    secret: str
    key: str  # shown once to the user, never stored
    key_hash: str  # what the database keeps


def generate_key() -> NewKey:
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    key = f"{KEY_SCHEME}_{prefix}_{secret}"
    return NewKey(prefix=prefix, secret=secret, key=key, key_hash=hash_key(key))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str | None:
    """The prefix of a well-formed key, None for anything else (no DB lookup for garbage)."""
    match = _KEY_RE.match(key)
    return match.group(1) if match else None
