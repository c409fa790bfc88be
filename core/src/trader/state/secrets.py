"""Encryption at rest for trading-account secrets.

The host's secret key (``PluginContext.settings["secret_key"]``, a string that may be a
passphrase) is stretched with scrypt and a random per-store salt into a 256-bit key; each value
is then sealed with AES-256-GCM under a fresh random nonce, bound to what it belongs to
(``context``, such as the account's name) so ciphertexts cannot be swapped between records.

Token layout: ``version (1 byte) | nonce (12 bytes) | ciphertext and tag``.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from trader.errors import ConfigError, StorageError

TOKEN_VERSION = 1
SALT_BYTES = 16
_NONCE_BYTES = 12
# scrypt cost: 2**15 × 8 × 128 bytes = 32 MiB and about 0.1 s once per opened store.
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1


def new_salt() -> bytes:
    """Return a fresh random salt for :class:`SecretBox`."""
    return os.urandom(SALT_BYTES)


def secret_key_from_settings(settings: dict[str, Any]) -> str | None:
    """Read the host's secret key from a plugin context's settings.

    Accepts a string or an object with ``get_secret_value()`` (pydantic's ``SecretStr``); an
    absent or empty key gives ``None``. Anything else is a :class:`~trader.errors.ConfigError`.
    """
    value = settings.get("secret_key")
    if value is not None and hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(
            [f"secret_key: must be a string, not {type(value).__name__}; set it to a passphrase"]
        )
    return value


class SecretBox:
    """Seal and open small secrets with a key derived from ``secret_key`` and ``salt``.

    The key is derived on first use, so a store that never touches secrets never pays for it.
    The passphrase is not kept after derivation, and neither it nor any plaintext ever appears
    in an error message or ``repr``.
    """

    __slots__ = ("_key", "_passphrase", "_salt")

    def __init__(self, secret_key: str, salt: bytes) -> None:
        if not secret_key:
            raise ValueError("SecretBox needs a non-empty secret key")
        if len(salt) < SALT_BYTES:
            raise ValueError(f"SecretBox needs a salt of at least {SALT_BYTES} bytes")
        self._passphrase: bytes | None = secret_key.encode("utf-8")
        self._salt = bytes(salt)
        self._key: AESGCM | None = None

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def _aead(self) -> AESGCM:
        if self._key is None:
            assert self._passphrase is not None
            kdf = Scrypt(salt=self._salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
            self._key = AESGCM(kdf.derive(self._passphrase))
            self._passphrase = None
        return self._key

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext``, bound to ``context``."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead().encrypt(nonce, plaintext, _associated_data(context))
        return bytes([TOKEN_VERSION]) + nonce + sealed

    def open(self, token: bytes, context: bytes, what: str) -> bytes:
        """Decrypt a token made by :meth:`seal` with the same key and ``context``.

        Raises :class:`~trader.errors.StorageError` naming ``what`` when the token is damaged,
        belongs to another record, or was sealed with a different secret key.
        """
        if len(token) < 1 + _NONCE_BYTES + 16 or token[0] != TOKEN_VERSION:
            raise StorageError(f"the stored {what} are damaged or in an unknown format")
        nonce = token[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead().decrypt(nonce, token[1 + _NONCE_BYTES :], _associated_data(context))
        except InvalidTag:
            raise StorageError(
                f"cannot decrypt the stored {what}: the secret key differs from the one they "
                "were saved with, or the data is damaged; set [storage] secret_key to the "
                "original key"
            ) from None


def _associated_data(context: bytes) -> bytes:
    return b"trader.state.secrets\x00" + context
