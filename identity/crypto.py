"""Per-person encryption (crypto-shredding, DESIGN §6).

Each resident has an AES-256-GCM key of their own. Personal fields that must travel in events
are sealed with it (:class:`schemas.common.EncryptedField`). Keys are stored wrapped by a
master key, in the identity store only. Erasure destroys the person's key: every sealed copy,
including those in the immutable Kafka log, becomes unreadable.

The ``key_id`` is bound into the ciphertext as associated data, so a sealed field cannot be
replayed under another person's key id.
"""

from __future__ import annotations

import base64
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.common import EncryptedField

KEY_BYTES = 32
NONCE_BYTES = 12


class SealError(ValueError):
    """A sealed value could not be opened: wrong or destroyed key, or tampered ciphertext."""


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def new_key_id() -> str:
    return "k-" + secrets.token_urlsafe(12)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def seal(key: bytes, key_id: str, plaintext: str) -> EncryptedField:
    nonce = os.urandom(NONCE_BYTES)
    ct = AESGCM(key).encrypt(nonce, plaintext.encode(), key_id.encode())
    return EncryptedField(key_id=key_id, nonce=_b64(nonce), ciphertext=_b64(ct))


def unseal(key: bytes, field: EncryptedField) -> str:
    try:
        return (
            AESGCM(key)
            .decrypt(_unb64(field.nonce), _unb64(field.ciphertext), field.key_id.encode())
            .decode()
        )
    except (InvalidTag, ValueError) as exc:
        raise SealError("sealed value cannot be opened with this key") from exc


def wrap_key(master: bytes, key: bytes, key_id: str) -> bytes:
    """Person key encrypted under the master key, for storage (nonce || ciphertext)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master).encrypt(nonce, key, b"wrap:" + key_id.encode())


def unwrap_key(master: bytes, wrapped: bytes, key_id: str) -> bytes:
    try:
        return AESGCM(master).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"wrap:" + key_id.encode()
        )
    except InvalidTag as exc:
        raise SealError("person key cannot be unwrapped with this master key") from exc


def load_master_key(path: os.PathLike[str] | str) -> bytes:
    """Read the master key, creating it (mode 0600) on first use of a local installation."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(new_key())
    data = p.read_bytes()
    if len(data) != KEY_BYTES:
        raise ValueError(f"master key {p} must be {KEY_BYTES} bytes")
    return data
