"""Who is calling: caller keys, their limits, and the admin key.

Keys are compared in constant time, as SHA-256 digests so that length says nothing either, and
against every configured key so that timing does not say which one matched. A caller is known
to the state store only by a hash of its key (`Caller.id`), never by the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from app.config import ServerConfig


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class Caller:
    name: str
    id: str  # a hash of the key: what counters and budgets are kept under
    rpm: int | None = None
    tpm: int | None = None
    budget_usd_per_day: float | None = None

    @property
    def limited(self) -> bool:
        return any(x is not None for x in (self.rpm, self.tpm, self.budget_usd_per_day))


class Callers:
    """The caller keys of one config (`server.api_keys` and `server.keys`), and its admin key."""

    def __init__(self, server: ServerConfig) -> None:
        self._keys: list[tuple[bytes, Caller]] = []
        for i, secret in enumerate(server.api_keys):
            key = secret.get_secret_value()
            if key:
                self._add(key, f"api_keys[{i}]", None, None, None)
        for entry in server.keys:
            key = entry.key.get_secret_value()
            if key:
                self._add(key, entry.name, entry.rpm, entry.tpm, entry.budget_usd_per_day)
        admin = server.admin_key.get_secret_value() if server.admin_key else ""
        self._admin = _digest(admin) if admin else None

    def _add(
        self, key: str, name: str, rpm: int | None, tpm: int | None, budget: float | None
    ) -> None:
        digest = _digest(key)
        self._keys.append((digest, Caller(name, digest.hex()[:32], rpm, tpm, budget)))

    @property
    def required(self) -> bool:
        """Callers must present a key (some key is configured)."""
        return bool(self._keys)

    @property
    def admin_configured(self) -> bool:
        return self._admin is not None

    def identify(self, supplied: str) -> Caller | None:
        """The caller whose key this is, or None; compares with every key, in constant time."""
        given = _digest(supplied)
        found: Caller | None = None
        for digest, caller in self._keys:
            if hmac.compare_digest(given, digest) and found is None:
                found = caller
        return found

    def is_admin(self, supplied: str) -> bool:
        return self._admin is not None and hmac.compare_digest(_digest(supplied), self._admin)
