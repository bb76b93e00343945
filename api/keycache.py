"""A short-lived, per-process cache of authenticated API keys: key hash -> Principal.

Without it every request looks its key up in the database (a query per request). With it a
key is looked up at most once per `ttl_s` per API process (each entry lives 75-100% of `ttl_s`,
so keys cached together do not expire together), so a revoked key keeps working for up to `ttl_s`
seconds in a process that saw it just before (`GANFT_AUTH_CACHE_S`; 0 disables the cache) —
on Postgres a revocation is pushed instead (NOTIFY at commit, `forget`), so it takes effect at
once while the API's listener is connected.
Only successful lookups are kept, so a new key works at once. Entries are keyed by the
key's sha256, so the process holds no secrets it was not just sent.

Used from the event loop only (the auth dependency is async), so it needs no lock.
"""

from __future__ import annotations

import random
import time

from ganft.repo.keys import Principal
from ganft.security import hash_key

MAX_ENTRIES = 10_000  # distinct keys kept; the oldest entry goes first when full


class KeyCache:
    def __init__(self, ttl_s: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}  # key hash -> (principal, monotonic expiry)

    def get(self, key: str) -> Principal | None:
        """The cached principal of `key`, None when unknown or expired (look it up then)."""
        if self.ttl_s <= 0:
            return None
        digest = hash_key(key)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        principal, expires = entry
        if time.monotonic() >= expires:
            del self._entries[digest]
            return None
        return principal

    def put(self, key: str, principal: Principal) -> None:
        """Remember a key that was just authenticated against the database."""
        if self.ttl_s <= 0:
            return
        digest = hash_key(key)
        self._entries.pop(digest, None)  # re-inserted last: insertion order is expiry order
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        # Spread over the last quarter of the TTL: keys first seen together (a client pool starting,
        # a restart) do not all fall due in the same instant.
        self._entries[digest] = (principal, time.monotonic() + self.ttl_s * (0.75 + 0.25 * random.random()))

    def forget(self, key_hash: str | None) -> None:
        """Drop the entry of the key with this sha256 (it was revoked), or every entry (None)."""
        if key_hash is None:
            self._entries.clear()
        else:
            self._entries.pop(key_hash, None)
