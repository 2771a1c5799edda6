"""HMAC signing of task messages and events (taskq/signing.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskq
from taskq.config import Settings
from taskq.signing import BadSignature, Signer, open_message, unwrap

OLD, NEW = "old-key-0123456789abcdef", "new-key-0123456789abcdef"


def test_a_signed_message_opens_with_any_accepted_key_and_the_first_signs() -> None:
    # Given a message signed before a rotation, and one after (the new key first)
    before = Signer.from_setting(OLD)
    during = Signer.from_setting(f"{NEW}, {OLD}")
    after = Signer.from_setting(NEW)
    assert before is not None and during is not None and after is not None
    old_message, new_message = before.sign(b"old"), during.sign(b"new")
    # Then during the rotation both open; after it, only the new key's
    assert during.open(old_message) == b"old" and during.open(new_message) == b"new"
    assert after.open(new_message) == b"new"
    with pytest.raises(BadSignature, match="none of the accepted keys"):
        after.open(old_message)


def test_unsigned_tampered_and_truncated_messages_are_refused() -> None:
    signer = Signer.from_setting(NEW)
    assert signer is not None
    signed = signer.sign(b'{"args": [1]}')
    tampered = signed[:-2] + b"9]"
    for refused in (b'{"args": [1]}', tampered, signed[:20]):
        with pytest.raises(BadSignature):
            signer.open(refused)
    # (BadSignature is a ProtocolError: the worker dead-letters it like other bad input)
    assert issubclass(BadSignature, taskq.ProtocolError)


def test_without_a_key_signed_messages_are_only_unwrapped() -> None:
    signer = Signer.from_setting(NEW)
    assert signer is not None
    assert open_message(None, signer.sign(b"body")) == b"body"
    assert unwrap(b"\x8cplain") == (b"\x8cplain", None)


def test_keys_come_from_the_setting_or_its_file_and_never_show(tmp_path: Path) -> None:
    assert Signer.from_setting("") is None
    with pytest.raises(taskq.ConfigurationError, match="at least 16 characters"):
        Signer.from_setting("short")
    # Given the keys one per line in a file (a Docker secret)
    secret = tmp_path / "keys"
    secret.write_text(f"{NEW}\n{OLD}\n")
    settings = Settings.load({"TASKQ_SIGNING_KEY_FILE": str(secret)})
    signer = Signer.from_setting(settings.signing_key)
    assert signer is not None and signer.open(Signer([OLD.encode()]).sign(b"x")) == b"x"
    for shown in (repr(settings), repr(signer)):
        assert NEW not in shown and OLD not in shown
