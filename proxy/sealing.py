"""Account secrets sealed at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key kept outside
the database.

Plain `secret` checks use the salted hash in accounts; verifying a `sign` (proxy.signing) needs
the secret itself, so accounts also keep it sealed. The key is `ACCOUNT_SEALING_KEY` when set,
otherwise `<instance_path>/sealing.key`, created on first use. Every host that shares the
database must share the key: a value sealed under one key opens under no other.

Pure: standard library and cryptography only; no Flask, no database.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import tempfile

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE_NAME = "sealing.key"

_HOW_TO_GENERATE = (
    "generate one with: python -c "
    '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


class SealError(Exception):
    """A sealed value that this key cannot open (wrong key, or the value was altered)."""


class SecretSealer:
    """Seals and unseals account secrets under one Fernet key."""

    def __init__(self, key: bytes):
        """`key`: a Fernet key, the url-safe base64 of 32 bytes. ValueError when it is not one."""
        self._fernet = Fernet(key)
        self._key = key

    def derive_key(self, purpose: bytes) -> str:
        """A key for `purpose` (hex HMAC-SHA256 of it under the sealing key): the same on every
        host sharing the sealing key, and revealing nothing of it."""
        return hmac.new(self._key, purpose, hashlib.sha256).hexdigest()

    @classmethod
    def from_config(cls, configured_key: str, instance_path: str) -> SecretSealer:
        """The sealer for `configured_key` (env ACCOUNT_SEALING_KEY) or, when that is empty, for
        the key file `<instance_path>/sealing.key`, created (mode 0600) if missing.

        Creation is race-safe: when several processes start at once, exactly one key is written
        and all of them use it. ValueError when the configured key or the key file is not a
        Fernet key; the message says how to make one and never repeats the bad value.
        """
        if configured_key:
            try:
                return cls(configured_key.strip().encode("ascii"))
            except (ValueError, TypeError):  # binascii.Error and UnicodeEncodeError included
                raise ValueError(
                    f"ACCOUNT_SEALING_KEY is not a Fernet key (it has {len(configured_key)} "
                    f"characters; a key is 44 url-safe base64 characters); {_HOW_TO_GENERATE}"
                ) from None
        path = os.path.join(instance_path, KEY_FILE_NAME)
        key = _read_key_file(path)
        if key is None:
            key = _create_key_file(instance_path, path)
        try:
            return cls(key)
        except (ValueError, TypeError):
            raise ValueError(
                f"{path} does not hold a Fernet key; replace it with one ({_HOW_TO_GENERATE}), "
                "or set ACCOUNT_SEALING_KEY. Secrets sealed under the lost key cannot be opened: "
                "those accounts need new secrets"
            ) from None

    def seal(self, secret: str) -> str:
        """An ASCII token holding `secret`, encrypted and authenticated."""
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def unseal(self, token: str) -> str:
        """The secret sealed in `token`; SealError when this key cannot open it."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SealError(
                "a sealed secret cannot be opened with this sealing key: the key differs from the "
                "one that sealed it (ACCOUNT_SEALING_KEY or instance sealing.key), or the stored "
                "value was altered"
            ) from None


def _read_key_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None


def _create_key_file(directory: str, path: str) -> bytes:
    """Write a new key to `path` unless another process gets there first; return the winner.

    The key is written and synced in a private temp file, then hard-linked into place: the link
    fails if `path` exists, so exactly one key wins and no reader ever sees a half-written file.
    """
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(prefix=f".{KEY_FILE_NAME}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp makes it 0600
            handle.write(Fernet.generate_key() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(temp_path, path)
            _fsync_directory(directory)
    finally:
        os.unlink(temp_path)
    key = _read_key_file(path)
    if key is None:
        raise RuntimeError(f"{path} vanished right after it was created")
    return key


def _fsync_directory(directory: str) -> None:
    # Losing the key loses every sealed secret: make the new name durable, where the OS can.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
