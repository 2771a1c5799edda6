"""Signed messages: with TASKQ_SIGNING_KEY set, a credential that may publish on the vhost
still cannot forge a task or a result. Without it, task events (which carry results) are
still signed, with the installation's key kept in the database (`Store.event_key`).

A signed message is `TQS1`, the HMAC-SHA256 of the message (32 bytes), then the exact bytes
of the message: nothing to parse before the check (a taskq message is a msgpack map, which
never starts so). The first key signs; every key of the list verifies, so a key is rotated
by adding the new one first, deploying, then removing the old one. Keys never appear in
logs, errors or reprs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from taskq.exceptions import ConfigurationError, ProtocolError

MAGIC = b"TQS1"
_DIGEST = 32
MIN_KEY_CHARS = 16


class BadSignature(ProtocolError):
    """A message that is not signed, or not by any accepted key."""


class Signer:
    """Signs with the first key, verifies with any."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigurationError("a signer needs at least one key")
        self._keys = tuple(keys)

    def __repr__(self) -> str:
        return f"Signer(<{len(self._keys)} key(s)>)"

    @classmethod
    def from_setting(cls, setting: str) -> Signer | None:
        """The signer for TASKQ_SIGNING_KEY's value (keys separated by commas or new lines,
        the signing one first), or None if it is empty."""
        keys = [key.strip() for key in setting.replace("\n", ",").split(",") if key.strip()]
        if not keys:
            return None
        if any(len(key) < MIN_KEY_CHARS for key in keys):
            raise ConfigurationError(
                f"each signing key must be at least {MIN_KEY_CHARS} characters (use a random "
                "one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return cls([key.encode() for key in keys])

    def sign(self, data: bytes) -> bytes:
        return MAGIC + hmac.new(self._keys[0], data, hashlib.sha256).digest() + data

    def open(self, data: bytes) -> bytes:
        """The signed bytes, if an accepted key signed them; else `BadSignature`."""
        inner, digest = unwrap(data)
        if digest is None:
            raise BadSignature("the message is not signed, and this app requires signatures")
        if not self._accepts(inner, digest):
            raise BadSignature("the message's signature matches none of the accepted keys")
        return inner

    def check(self, data: bytes) -> tuple[bytes, bool]:
        """(the message, whether an accepted key signed it), never raising: for events,
        which a sender without the key may still send as hints."""
        inner, digest = unwrap(data)
        return inner, digest is not None and self._accepts(inner, digest)

    def _accepts(self, inner: bytes, digest: bytes) -> bool:
        return any(
            hmac.compare_digest(hmac.new(key, inner, hashlib.sha256).digest(), digest)
            for key in self._keys
        )


def unwrap(data: bytes) -> tuple[bytes, bytes | None]:
    """(the message, its HMAC) of a signed message; (data, None) for any other bytes."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _DIGEST:
        return data, None
    return data[len(MAGIC) + _DIGEST :], data[len(MAGIC) : len(MAGIC) + _DIGEST]


def open_message(signer: Signer | None, data: bytes) -> bytes:
    """The message to decode: verified when this app signs, unwrapped (unverified) else."""
    if signer is not None:
        return signer.open(data)
    return unwrap(data)[0]
