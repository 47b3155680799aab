"""Encryption at rest: AES-256-GCM over the stored body, its key named in the value.

An encrypted value is ``e1:<version>:<key id>:<nonce><ciphertext and tag>``. The
header stays plaintext, so the Lua scripts read the version as for any value; the
plaintext is the inner format and body (``j1:<json>`` or ``z1:<zlib>``): the body
is compressed, when configured, before it is encrypted.

Each session gets a subkey of its own (keyed BLAKE2b of the key over the session's
digest), so a random 96-bit nonce is drawn a handful of times per subkey, never
the billions of times per key where GCM's nonce bound starts to matter. The
associated data names the format, the key id and the digest: a value copied under
another session's key does not decrypt.

``cryptography`` is an optional dependency (``django-redis-sessions[encryption]``),
imported only when keys are configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from django_redis_sessions import codec, conf, hooks, scripts

ENCRYPTED = codec.ENCRYPTED
MODES = ("read", "write", "require")
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_PERSON = b"drs-session-enc"
_INNER_FORMATS = (codec.PLAIN, codec.COMPRESSED)
_SESSION_DIGEST_RE = re.compile(r"[0-9a-f]{32}")
# The one line the README gives to make a key ("k1" is its id; pick any).
GENERATE_KEY = (
    "python -c \"import base64, os; print('k1:' + "
    'base64.urlsafe_b64encode(os.urandom(32)).decode())"'
)

# What reseal() found for one key (manage.py reencrypt_sessions counts them).
RESEALED = "re-encrypted"
CURRENT = "already current"
UNREADABLE = "unreadable"
GONE = "gone"
CHANGING = "kept changing"
RESEAL_ATTEMPTS = 3
# Ciphers of recently used sessions kept per process (about 1 KB each).
CIPHER_CACHE = 1024


def _fail(key: str, message: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f'SESSION_REDIS["{key}"]: {message}')


class Keyring:
    """The configured keys: the first encrypts, each decrypts the values naming it."""

    __slots__ = ("_aead", "_ciphers", "_invalid", "_keys", "current")

    def __init__(self, keys: Sequence[tuple[bytes, bytes]]) -> None:
        try:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:
            raise _fail(
                "encryption_keys",
                "encryption needs the cryptography package: "
                'pip install "django-redis-sessions[encryption]".',
            ) from exc
        self._aead = AESGCM
        self._invalid = InvalidTag
        # A request opens then seals the same session: derive its cipher once.
        # Dict reads and writes are atomic, so threads share this safely.
        self._ciphers: dict[tuple[bytes, bytes], Any] = {}
        self._keys = dict(keys)
        self.current = keys[0][0]

    def __repr__(self) -> str:  # never the keys themselves
        ids = ", ".join(kid.decode() for kid in self._keys)
        return f"Keyring(key ids: {ids})"

    def _cipher(self, kid: bytes, secret: bytes, digest: bytes) -> Any:
        cipher = self._ciphers.get((kid, digest))
        if cipher is None:
            subkey = hashlib.blake2b(digest, key=secret, digest_size=KEY_BYTES, person=_PERSON)
            cipher = self._aead(subkey.digest())
            if len(self._ciphers) >= CIPHER_CACHE:
                self._ciphers.clear()
            self._ciphers[kid, digest] = cipher
        return cipher

    def seal(self, digest: str, fmt: bytes, stored_body: bytes) -> bytes:
        """``<key id>:<nonce><ciphertext>`` of an inner value, with the first key."""
        kid = self.current
        session = digest.encode("ascii")
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher(kid, self._keys[kid], session).encrypt(
            nonce, b"%s:%s" % (fmt, stored_body), b"e1:%s:%s" % (kid, session)
        )
        return b"%s:%s%s" % (kid, nonce, sealed)

    def open(self, digest: str, stored_body: bytes) -> tuple[bytes, bytes]:
        """The inner ``(format, stored body)`` of a sealed body, or CorruptSession."""
        kid, sep, sealed = stored_body.partition(b":")
        secret = self._keys.get(kid)
        if not sep or secret is None:
            raise codec.CorruptSession(
                f"encrypted with an unknown key id {kid[:32]!r} "
                '(not in SESSION_REDIS["encryption_keys"])'
            )
        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise codec.CorruptSession("encrypted body too short")
        session = digest.encode("ascii")
        try:
            plaintext = self._cipher(kid, secret, session).decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], b"e1:%s:%s" % (kid, session)
            )
        except self._invalid:
            raise codec.CorruptSession(
                f"does not decrypt with key {kid.decode()!r} "
                "(tampered, wrong key, or copied from another session)"
            ) from None
        fmt, _, body = plaintext.partition(b":")
        if fmt not in _INNER_FORMATS:
            raise codec.CorruptSession("unrecognised encrypted body")
        return fmt, body


# Settings ------------------------------------------------------------------------

#: The SESSION_REDIS keys this feature owns.
KEYS = frozenset({"encryption_keys", "encryption"})


@dataclass(frozen=True)
class Config:
    """What encryption needs to know: its keys and mode, and the core's compression and prefix."""

    encryption_keys: Keyring | None
    encryption: str | None
    compress_min_bytes: int | None
    prefix: str


def configure(core: conf.Config) -> Config | None:
    """This feature's settings, or None when encryption is off."""
    parsed = parse_settings(core.features)
    if parsed["encryption_keys"] is None:
        return None
    return Config(**parsed, compress_min_bytes=core.compress_min_bytes, prefix=core.prefix)


class Codec(hooks.Codec):
    """The codec slot with encryption on: values are sealed (and opened) per session."""

    def __init__(self, config: Config) -> None:
        super().__init__(config.compress_min_bytes)
        self.config = config

    def seal(self, digest: str, body: bytes) -> tuple[bytes, bytes]:
        return pack(self.config, digest, body)

    def open(self, digest: str, fmt: bytes, stored_body: bytes) -> bytes:
        return unpack(self.config, digest, fmt, stored_body)

    def is_current(self, fmt: bytes, stored_body: bytes) -> bool:
        return is_current(self.config, fmt, stored_body)


def parse_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The ``encryption_keys`` and ``encryption`` fields of this feature's Config."""
    keys = _parse_keys(raw.get("encryption_keys"))
    mode = raw.get("encryption")
    if mode is not None and mode not in MODES:
        # A key pasted into the wrong setting is never echoed back.
        raise _fail("encryption", f"must be 'read', 'write' or 'require', got {_shown(mode)}.")
    if not keys:
        if mode is not None:
            raise _fail(
                "encryption",
                f'{mode!r} needs keys: set SESSION_REDIS["encryption_keys"] '
                f"(make one with: {GENERATE_KEY}).",
            )
        return {"encryption_keys": None, "encryption": None}
    return {"encryption_keys": Keyring(keys), "encryption": mode or "write"}


def _shown(value: Any) -> str:
    """A mistyped mode ("on"), never a key pasted into the wrong setting."""
    if isinstance(value, str) and value.isalpha() and len(value) <= 10:
        return repr(value)
    return f"a {type(value).__name__}"


def _parse_keys(value: Any) -> list[tuple[bytes, bytes]]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _fail(
            "encryption_keys",
            f"must be a list of '<key id>:<key>' strings, got a {type(value).__name__}.",
        )
    keys: list[tuple[bytes, bytes]] = []
    for position, entry in enumerate(value):
        # Messages name the position, never any part of the entry: a swapped
        # "<key>:<key id>" puts the key where the id should be.
        where = f"entry {position}"
        if not isinstance(entry, str) or ":" not in entry:
            raise _fail(
                "encryption_keys",
                f"{where} must be a '<key id>:<key>' string (make one with: {GENERATE_KEY}).",
            )
        kid, _, encoded = entry.partition(":")
        if not KEY_ID_RE.fullmatch(kid):
            raise _fail(
                "encryption_keys",
                f"{where}: the key id, before the first ':', must be 1 to 32 of "
                "A-Z a-z 0-9 _ . - (is it '<key>:<key id>' the wrong way round?).",
            )
        try:
            secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            secret = b""
        if len(secret) != KEY_BYTES:
            raise _fail(
                "encryption_keys",
                f"{where}: the key, after the first ':', must be {KEY_BYTES} random bytes "
                f"in URL-safe base64 (make one with: {GENERATE_KEY}).",
            )
        if any(kid.encode() == known for known, _ in keys):
            raise _fail("encryption_keys", f"{where} repeats the key id of an earlier entry.")
        keys.append((kid.encode(), secret))
    return keys


# Values --------------------------------------------------------------------------


def pack(config: Config, digest: str, body: bytes) -> tuple[bytes, bytes]:
    """``(format, stored body)`` of a JSON body: compressed if configured, then sealed."""
    fmt, stored = codec.pack_body(body, config.compress_min_bytes)
    keyring = config.encryption_keys
    if keyring is None or config.encryption == "read":
        return fmt, stored
    return ENCRYPTED, keyring.seal(digest, fmt, stored)


def unpack(config: Config, digest: str, fmt: bytes, stored_body: bytes) -> bytes:
    """The JSON body of a stored value, or CorruptSession if this config must refuse it."""
    return codec.unpack_body(*_inner(config, digest, fmt, stored_body))


def _inner(config: Config, digest: str, fmt: bytes, stored_body: bytes) -> tuple[bytes, bytes]:
    keyring = config.encryption_keys
    if fmt == ENCRYPTED:
        if keyring is None:
            raise codec.CorruptSession('encrypted, but SESSION_REDIS["encryption_keys"] is not set')
        return keyring.open(digest, stored_body)
    if config.encryption == "require":
        raise codec.CorruptSession('not encrypted, and SESSION_REDIS["encryption"] is "require"')
    return fmt, stored_body


def is_current(config: Config, fmt: bytes, stored_body: bytes) -> bool:
    """Whether a stored value is as this config writes it (else a save rewrites it)."""
    keyring = config.encryption_keys
    if keyring is None:
        return True
    if config.encryption == "read":
        return fmt != ENCRYPTED
    return fmt == ENCRYPTED and stored_body.startswith(keyring.current + b":")


def session_digest(config: Config, redis_key: str) -> str | None:
    """The digest a Redis key under the prefix names, if it is a session's key."""
    if not redis_key.startswith(config.prefix):
        return None
    digest = redis_key[len(config.prefix) :]
    return digest if _SESSION_DIGEST_RE.fullmatch(digest) else None


def reseal(
    config: Config, redis_key: str, digest: str, value: Any, *, dry_run: bool = False
) -> Generator[tuple[Any, ...], Any, str]:
    """Steps that move one stored session to the first key; returns what happened.

    Under ``"read"``, they decrypt it instead (switching encryption off).

    ``value`` is what a batched read found (None: read it here). The version and
    expiry stay as they are: the session's content does not change, so requests
    holding that version still save or refresh it normally.
    """
    for _ in range(RESEAL_ATTEMPTS):
        if value is None:
            value = yield (scripts.GET, redis_key)
            if value is None:
                return GONE
        try:
            if isinstance(value, Exception):
                raise codec.CorruptSession(str(value))
            fmt, version, stored = codec.split(value)
            if is_current(config, fmt, stored):
                return CURRENT
            inner_fmt, inner_body = _inner(config, digest, fmt, stored)
            codec.loads(codec.unpack_body(inner_fmt, inner_body))
        except codec.CorruptSession:
            return UNREADABLE
        if dry_run:
            return RESEALED
        keyring = config.encryption_keys
        assert keyring is not None  # is_current() is True without keys
        if config.encryption == "read":
            new = codec.join(inner_fmt, version, inner_body)
        else:
            new = codec.join(ENCRYPTED, version, keyring.seal(digest, inner_fmt, inner_body))
        reply = yield (scripts.EVALSHA, scripts.RESEAL, redis_key, version, new)
        if reply == 1:
            return RESEALED
        if reply == 0:
            return GONE
        value = None  # a save came first: look at what it wrote
    return CHANGING
