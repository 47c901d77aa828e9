"""The secret that signs residents' unsubscribe links: a key of its own, not the master key's.

Why its own key: an unsubscribe link must work for as long as the message sits in a mailbox
(years), but the master key is rotated (``lpt rotate-master-key``, :mod:`identity.rotation`).
While the link key was derived from the master key, every rotation silently broke one-click
opt-out in every message already sent. The link key lives in ``settings.link_key_file``
(``$LPT_HOME/secrets/link.key`` by default, mode 0600, like the master key) and nothing else
changes it.

Links mailed before this key existed were signed with a key derived from the master key
(:func:`legacy_link_key`). So the file is created, once, holding exactly that derived key when
a master key already exists: those links keep verifying, and from then on the value no longer
follows the master key. A new installation without a master key gets a random key. Rotation
calls :func:`load_link_key` before it replaces the master key, so the key is always seeded
from the master key the mailed links were made with.

Replacing the file by hand invalidates every link already mailed (only do it if the key
leaked, and then tell residents they can opt out from the manage page).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from identity.crypto import KEY_BYTES
from lpt.logs import get_logger
from lpt.settings import Settings

log = get_logger(__name__)

#: HKDF ``info`` of the derivation the links were signed with before the link key existed.
LEGACY_INFO = b"lpt unsubscribe link v1"


def legacy_link_key(master_key: bytes) -> bytes:
    """The link key derived from (never equal to) a master key, as links were signed before."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=LEGACY_INFO).derive(
        master_key
    )


def _create(path: Path, key: bytes) -> None:
    """Write ``key`` to ``path`` unless another process got there first (atomic, 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if it exists: the first writer wins, nobody sees half
        except FileExistsError:
            return
        log.info("identity.link_key_created", path=str(path))
    finally:
        tmp.unlink(missing_ok=True)


def load_link_key(settings: Settings) -> bytes:
    """The unsubscribe-link key, created on first use (seeded as the module docstring says)."""
    path = settings.link_key_file
    if not path.exists():
        master = settings.master_key_file
        if master.exists() and master.stat().st_size == KEY_BYTES:
            key = legacy_link_key(master.read_bytes())
        else:
            key = secrets.token_bytes(KEY_BYTES)
        _create(path, key)
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise ValueError(f"link key {path} must be {KEY_BYTES} bytes")
    return data
