"""How a session is stored: key names, the value's header, JSON and compression.

A stored value is ``<format>:<version>:<body>``. ``format`` says how the body is
encoded (``j1`` plain JSON, ``z1`` zlib-compressed JSON, ``e1`` either of them
encrypted: see ``crypto``), ``version`` counts the
writes so concurrent saves can detect each other (see ``scripts.SAVE``). Pickle
is never involved: the body is JSON produced and parsed by the stdlib.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from typing import Any

PLAIN = b"j1"
COMPRESSED = b"z1"
ENCRYPTED = b"e1"
FORMATS = (PLAIN, COMPRESSED, ENCRYPTED)
FIRST_VERSION = b"1"
# Left at an ended session's key while another store may still hold it (see
# ``migration``): a write of the session there (SET NX) then fails, and a load
# reads it as no session.
TOMBSTONE = b"t1"
ZLIB_LEVEL = 6

# Django's contract (SessionBase._validate_session_key): 8 characters or more.
# Ours adds an upper bound and printable ASCII without spaces, so that junk is
# refused before any work (the digest encodes the key as ASCII).
MIN_KEY_LENGTH = 8
MAX_KEY_LENGTH = 256
SESSION_KEY_RE = re.compile(rf"[!-~]{{{MIN_KEY_LENGTH},{MAX_KEY_LENGTH}}}")
# A version is 1 to VERSION_DIGITS digits, no leading zero. The scripts'
# header check is built from the same constants (scripts.HEADER_LUA).
VERSION_DIGITS = 16
_VERSION_RE = re.compile(rb"[1-9][0-9]{0,%d}" % (VERSION_DIGITS - 1))
# Bound once: both run on every request.
_key_fullmatch = SESSION_KEY_RE.fullmatch
_version_fullmatch = _VERSION_RE.fullmatch

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_compact_ascii = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


class CorruptSession(ValueError):
    """A stored value that this engine did not write or cannot read."""


def is_valid_session_key(key: object) -> bool:
    """Whether ``key`` can name a session: 8 to 256 printable ASCII characters, no spaces."""
    # The pattern bounds the length too: one match, on every request.
    return isinstance(key, str) and _key_fullmatch(key) is not None


def digest(session_key: str) -> str:
    """A one-way name for a session: what Redis and the logs see instead of the cookie."""
    return hashlib.blake2b(
        session_key.encode("ascii"), digest_size=16, person=b"drs-session-key"
    ).hexdigest()


def is_tombstone(value: Any) -> bool:
    return bool(value == TOMBSTONE or value == TOMBSTONE.decode())


def redis_key(prefix: str, session_key: str) -> str:
    return prefix + digest(session_key)


def dumps(data: dict[str, Any]) -> bytes:
    """Compact JSON; a value JSON cannot hold raises TypeError naming its session key."""
    try:
        text = _compact(data)
    except (TypeError, ValueError) as exc:
        raise _name_culprit(data, exc) from exc
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: JSON escapes keep them, UTF-8 cannot.
        return _compact_ascii(data).encode("ascii")


def _name_culprit(data: dict[str, Any], exc: Exception) -> TypeError:
    for key, value in data.items():
        try:
            _compact(value)
        except (TypeError, ValueError) as inner:
            return TypeError(f"Session value for key {key!r} is not JSON serializable: {inner}")
    return TypeError(f"Session data is not JSON serializable: {exc}")


def pack_body(body: bytes, compress_min_bytes: int | None) -> tuple[bytes, bytes]:
    """Return ``(format, stored body)``, compressing when that is configured and pays."""
    if compress_min_bytes is not None and len(body) >= compress_min_bytes:
        packed = zlib.compress(body, ZLIB_LEVEL)
        if len(packed) < len(body):
            return COMPRESSED, packed
    return PLAIN, body


def join(fmt: bytes, version: bytes, stored_body: bytes) -> bytes:
    return b"%s:%s:%s" % (fmt, version, stored_body)


def split(value: bytes | str) -> tuple[bytes, bytes, bytes]:
    """Return ``(format, version, stored body)`` of a stored value, or raise CorruptSession."""
    if not isinstance(value, bytes):
        if not isinstance(value, str):
            raise CorruptSession(f"a {type(value).__name__}, not a stored value")
        value = value.encode("utf-8", "surrogateescape")  # a client with decode_responses=True
    parts = value.split(b":", 2)
    if len(parts) == 3:
        fmt, version, stored_body = parts
        if fmt in FORMATS and _version_fullmatch(version) is not None:
            return fmt, version, stored_body
    raise CorruptSession("unrecognised header")


def unpack_body(fmt: bytes, stored_body: bytes) -> bytes:
    """The JSON body of a stored body, decompressing it if need be."""
    if fmt == COMPRESSED:
        try:
            return zlib.decompress(stored_body)
        except zlib.error as exc:
            raise CorruptSession(f"bad compressed body: {exc}") from exc
    return stored_body


def loads(body: bytes) -> dict[str, Any]:
    try:
        data = _decode(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptSession(f"bad JSON body: {exc}") from exc
    if not isinstance(data, dict):
        raise CorruptSession(f"JSON body is a {type(data).__name__}, not an object")
    return data
