"""Every Redis command the engine sends, and its Lua scripts.

Each operation touches exactly one key, so the same code runs on Redis Cluster.
A stored value is ``<format>:<version>:<body>`` (see ``codec``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

GET = "GET"
SET = "SET"
DEL = "DEL"
EXISTS = "EXISTS"
EVALSHA = "EVALSHA"
EVAL = "EVAL"
NX = "NX"
PX = "PX"


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# Shared prologue: the stored version, or "return 0" when the session is gone
# (or is not a value of ours, which is never overwritten); other errors (an ACL
# refusal, say) are returned as errors. GETRANGE reads just
# the header ("z1:" + up to 16 digits + ":"), not the whole value.
_CURRENT_VERSION = """
local head = redis.pcall('GETRANGE', KEYS[1], 0, 23)
if type(head) == 'table' then
  if string.find(head['err'], 'WRONGTYPE', 1, true) then return 0 end
  return head
end
local ver = string.match(head, '^[jz]1:(%d+):')
if not ver then return 0 end
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

SCRIPTS = (SAVE, REPLACE, TOUCH)

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
