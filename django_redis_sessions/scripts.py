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
# (or is not a value of ours, which is never overwritten).
_CURRENT_VERSION = """
local cur = redis.pcall('GET', KEYS[1])
if type(cur) ~= 'string' then return 0 end
local ver = string.match(cur, '^[jz]1:(%d+):')
if not ver then return 0 end
"""

# Write only if the session still exists and still has the version this request
# loaded; ARGV[1] == "" skips the version check (an overwrite, e.g. after clear()).
# Returns the new version, 0 when the session is gone (never recreate it), or the
# current value on a version mismatch so the client can merge without a GET.
SAVE = Script(
    "save",
    _CURRENT_VERSION
    + """if ARGV[1] ~= '' and ver ~= ARGV[1] then return cur end
local new = tostring(tonumber(ver) + 1)
redis.call('SET', KEYS[1], ARGV[2] .. ':' .. new .. ':' .. ARGV[3], 'PX', ARGV[4])
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

SCRIPTS = (SAVE, TOUCH)
