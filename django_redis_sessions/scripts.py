"""Every Redis command the engine sends, and its Lua scripts.

Each operation touches exactly one key, so the same code runs on Redis Cluster.
A stored value is ``<format>:<version>:<body>`` (see ``codec``).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any

from django_redis_sessions import codec

GET = "GET"
SET = "SET"
DEL = "DEL"
EXISTS = "EXISTS"
# The one end path (session.py): remove a session and read what it held.
GETDEL = "GETDEL"
PEXPIRE = "PEXPIRE"
EVALSHA = "EVALSHA"
EVAL = "EVAL"
NX = "NX"
PX = "PX"
# The per-user index (see ``users``): one hash per user, one field per session.
HGETALL = "HGETALL"
HDEL = "HDEL"
HEXISTS = "HEXISTS"
PTTL = "PTTL"
IFEQ = "IFEQ"


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# codec.split()'s header rule in Lua, so that a value the scripts accept is
# one the engine can read: a known format, then a version without a leading zero.
assert all(len(fmt) == 2 and fmt.endswith(b"1") for fmt in codec.FORMATS)
_FORMAT_LETTERS = "".join(chr(fmt[0]) for fmt in codec.FORMATS)
HEADER_LUA = f"^[{_FORMAT_LETTERS}]1:([1-9]%d*):"
HEADER_BYTES = 2 + 1 + codec.VERSION_DIGITS + 1

# Shared prologue: the stored version, or "return 0" when the session is gone
# (or is not a value of ours, which is never overwritten); other errors (an ACL
# refusal, say) are returned as errors. GETRANGE reads just the header (one
# byte more than the longest, so a longer version is seen as such), not the
# whole value; an encrypted value ("e1:") has the same plaintext header.
_CURRENT_VERSION = f"""
local head = redis.pcall('GETRANGE', KEYS[1], 0, {HEADER_BYTES})
if type(head) == 'table' then
  if string.find(head['err'], 'WRONGTYPE', 1, true) then return 0 end
  return head
end
local ver = string.match(head, '{HEADER_LUA}')
if not ver or #ver > {codec.VERSION_DIGITS} then return 0 end
"""

# Write ARGV[2] (the whole new value, its version already ARGV[1] + 1) only if the
# session still exists with version ARGV[1], the one this request loaded.
# Returns 1 when written, 0 when the session is gone (never recreate it), or
# the current value on a version mismatch so the client can merge without a GET.
SAVE = Script(
    "save",
    _CURRENT_VERSION
    + """if ver ~= ARGV[1] then return redis.call('GET', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
""",
)

# Overwrite whatever version is stored (after clear(), or without a load), but
# only if the session still exists. Returns the new version, or 0 when gone.
REPLACE = Script(
    "replace",
    _CURRENT_VERSION
    + """local new = tostring(tonumber(ver) + 1)
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. new .. ':' .. ARGV[2], 'PX', ARGV[3])
return tonumber(new)
""",
)

# Refresh the expiry of an unchanged session. Returns 1 when refreshed, 2 when a
# newer write exists (it set its own expiry moments ago), 0 when the session is gone.
TOUCH = Script(
    "touch",
    _CURRENT_VERSION
    + """if ver ~= ARGV[1] then return 2 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""",
)

# Rewrite a value in place, keeping its version and expiry: ARGV[2] is the same
# session as version ARGV[1], sealed with another key (manage.py
# reencrypt_sessions) or with a new engine stamp (the index's last_seen), so
# requests holding that version still save or refresh it normally.
# Returns 1 when written, 2 when a write came first, 0 when the session is gone.
RESEAL = Script(
    "reseal",
    _CURRENT_VERSION
    + """if ver ~= ARGV[1] then return 2 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
""",
)

# The end path with a tombstone (see ``session._end``): overwrite the session
# with ARGV[1] (the tombstone) for ARGV[2] ms, returning what it held (nil if
# nothing). A value of another Redis type is left alone, its error returned.
TOMBSTONE = Script(
    "tombstone",
    """local old = redis.pcall('GET', KEYS[1])
if type(old) == 'table' then return old end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return old
""",
)

# Timeouts (see ``timeouts``) ------------------------------------------------------

# The value, its remaining TTL (ms) and Redis's clock, in one round trip, so the
# engine can check the session's clocks without asking again. A value of
# another Redis type comes back as the WRONGTYPE error GET gives.
LOAD = Script(
    "load",
    """local value = redis.pcall('GET', KEYS[1])
if type(value) == 'table' then return value end
if not value then return false end
local now = redis.call('TIME')
return {value, redis.call('PTTL', KEYS[1]), now[1], now[2]}
""",
)

# Redis's clock, from the node that owns KEYS[1]: where a sign-in's clock starts.
NOW = Script("now", "return redis.call('TIME')\n")

# Create a session (SET NX) with the expiry ARGV[2]; 1 when created, 0 when
# the key is taken. Only used with an absolute deadline (see ``deadlined``).
CREATE = Script(
    "create",
    """if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
return 0
""",
)


def deadlined(script: Script, ttl_arg: int, on_passed: str) -> Script:
    """``script`` with one more argument, an absolute deadline (Unix ms on Redis's
    clock): its expiry ARGV[ttl_arg] is cut to the time left before it, measured
    here with TIME so every app server agrees; past it, ``on_passed`` runs."""
    return Script(
        script.name + "-deadlined",
        f"""local deadline = tonumber(table.remove(ARGV))
local now = redis.call('TIME')
local left = deadline - (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
if left <= 0 then {on_passed} end
if left < tonumber(ARGV[{ttl_arg}]) then ARGV[{ttl_arg}] = tostring(left) end
"""
        + script.source,
    )


# Past the deadline the session is over: remove it and answer "gone".
_END = "redis.call('DEL', KEYS[1]) return 0"
DEADLINED = {
    SAVE: deadlined(SAVE, 3, _END),
    REPLACE: deadlined(REPLACE, 3, _END),
    TOUCH: deadlined(TOUCH, 2, _END),
    # A new session already past its deadline: nothing to keep, nothing to undo.
    CREATE: deadlined(CREATE, 2, "return 1"),
}

# Scripts that read, or only move an expiry: no WAIT for replicas after them.
NO_WAIT = (TOUCH, DEADLINED[TOUCH], LOAD, NOW)

# Native compare-and-set (Valkey 8.1+, Redis 8.4+) ---------------------------------------

# Not a Redis command: the driver answers True when the server takes SET ... IFEQ
# (``connection.supports_ifeq``: one INFO per connection pool, then remembered).
IFEQ_SUPPORTED = "IFEQ_SUPPORTED"

# Not a Redis command: ``(PIPELINE, command, ...)`` sends the commands in one
# round trip (on a Cluster, one per run of commands in the same slot), in order,
# answered by the list of their replies, each as the command alone would get
# it (see ``driver``). Only Redis commands go in it.
PIPELINE = "PIPELINE"
# Not a Redis command: ``(CALL, function, *args)`` (see ``driver``).
CALL = "CALL"
#: What the driver answers itself: never sent in a pipeline.
DRIVER_ONLY = frozenset({IFEQ_SUPPORTED, PIPELINE, CALL})
#: Of those, the questions that change nothing: ``hooks.together`` may answer
#: them out of turn, before the commands it pairs.
QUESTIONS = frozenset({IFEQ_SUPPORTED})


def set_ifeq(key: Any, value: bytes, expected: bytes, ttl_ms: int) -> tuple[Any, ...]:
    """Write ``value`` (expiry ``ttl_ms``) only if the key holds exactly ``expected``,
    the bytes this request read; never creates the key. The SAVE script's work in
    one command, with the server's own comparison. See ``swap_outcome`` for its reply."""
    return (SET, key, value, IFEQ, expected, GET, PX, ttl_ms)


class Swap(enum.Enum):
    WRITTEN = "written"
    # Not written: another write came first; merge with the value handed back.
    CONFLICT = "conflict"
    # Not written, and no value came back: on Valkey the key is gone. Redis 8.4's
    # documentation of GET with a failed condition is unclear (some of it says
    # nil), so a caller confirms with a GET before it treats the session as ended.
    NO_VALUE = "no value"


def swap_outcome(reply: Any, expected: bytes) -> tuple[Swap, bytes | None]:
    """What ``set_ifeq``'s reply means, and the current value on a conflict.

    With GET, SET answers the value it found: ``expected`` when it wrote
    (successive values differ by their version), anything else when it did
    not, nil when there was no key (or, perhaps on Redis, no write).
    """
    if reply is None:
        return Swap.NO_VALUE, None
    current = reply.encode() if isinstance(reply, str) else bytes(reply)  # decode_responses
    if current == expected:
        return Swap.WRITTEN, None
    return Swap.CONFLICT, current


def ifeq_refused(error: Exception) -> bool:
    """A server that does not know IFEQ after all (a failover to an older one):
    it answers a syntax error; run the script instead and ask again later."""
    return "syntax error" in str(error).lower()  # redis-py drops the "ERR " prefix


# The ops report (``inventory``): read-only. SCAN and DBSIZE address one node;
# the others touch one key each.
SCAN = "SCAN"
DBSIZE = "DBSIZE"
MEMORY_USAGE = ("MEMORY", "USAGE")

# Upsert one session's entry in a user's index hash: field ARGV[1] (its digest),
# value ARGV[2] (format "A": "A<seen>|<until - seen>|<seen - created>|", base-36
# ms, see userindex) followed by ARGV[7] ("<ip>|<user agent>"; "" keeps the
# entry's current tail, or that of field ARGV[8], the session this one was
# cycled from, of either format), at ARGV[3] = now (ms). Entries of the
# previous release ("<until>|<seen>|<created>|<JSON>", decimal) are read too.
# Entries past their "until" by more than ARGV[6] ms of clock slack are dropped
# (their sessions have expired); beyond ARGV[5] entries, the least recently seen
# others are dropped and returned, for the caller to end their sessions. The
# hash then lives at least ARGV[4] ms. Returns -1 (writing nothing) when the key
# holds something other than a hash.
INDEX_PUT = Script(
    "index_put",
    """local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then return -1 end
local now, slack = tonumber(ARGV[3]), tonumber(ARGV[6])
local meta = ARGV[7]
if kind == 'none' then
  -- A user's first session (the common sign-in): nothing to keep, prune or evict.
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. (meta == '' and '|' or meta))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {}
end
if meta == '' then
  local old = redis.call('HGET', KEYS[1], ARGV[1])
  if not old and ARGV[8] ~= '' then old = redis.call('HGET', KEYS[1], ARGV[8]) end
  meta = old and (string.match(old, '^A%w+|%-?%w+|%-?%w+|(.*)$')
    or string.match(old, '^%d+|%d+|%d+|(.*)$')) or '|'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. meta)
local entries = redis.call('HGETALL', KEYS[1])
local others = {}
for i = 1, #entries, 2 do
  local seen, ahead = string.match(entries[i + 1], '^A(%w+)|(%-?%w+)|')
  local until_ms
  if seen then
    local sign = 1
    if string.sub(ahead, 1, 1) == '-' then sign, ahead = -1, string.sub(ahead, 2) end
    seen, ahead = tonumber(seen, 36), tonumber(ahead, 36)
    if seen and ahead then until_ms = seen + sign * ahead end
  else
    until_ms, seen = string.match(entries[i + 1], '^(%d+)|(%d+)|')
    until_ms, seen = tonumber(until_ms), tonumber(seen)
  end
  if not until_ms or until_ms + slack < now then
    redis.call('HDEL', KEYS[1], entries[i])
  elseif entries[i] ~= ARGV[1] then
    others[#others + 1] = {seen, entries[i]}
  end
end
local evicted = {}
local excess = #others + 1 - tonumber(ARGV[5])
if excess > 0 then
  table.sort(others, function(a, b) return a[1] < b[1] end)
  for i = 1, excess do
    redis.call('HDEL', KEYS[1], others[i][2])
    evicted[i] = others[i][2]
  end
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return evicted
""",
)

SCRIPTS = (SAVE, REPLACE, TOUCH, RESEAL, INDEX_PUT)

# Migration from django-redis-sessions 0.6.2 (migration.py), on its own server:
# delete a key only if it holds a signed session string (Django's signing.dumps),
# never a value of ours or of anyone else.
DELETE_SIGNED = Script(
    "delete_signed",
    """local value = redis.call('GET', KEYS[1])
local sig = value and string.match(value, '^%.?[%w_%-]+:%w+:([%w_%-]+)$')
if sig and #sig == 43 then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)
