"""The core of the ``SESSION_REDIS`` setting: where Redis is and how the engine talks to it.

The features (``crypto``, ``timeouts``, ``users``, ``migration``) each own their
keys and parse them themselves from ``Config.features``; ``plan`` refuses a key
that no one owns. This module imports nothing of the package.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

SETTING = "SESSION_REDIS"
DEFAULT_URL = "redis://localhost:6379/0"
# With sentinels and no "url": db 0, no credentials; the host comes from the sentinels.
SENTINEL_URL = "redis:///0"
DEFAULT_PREFIX = "session:"
URL_SCHEMES = ("redis", "rediss", "unix")
ON_UNAVAILABLE = ("error", "anonymous")

# Session I/O sits on the request path: fail fast instead of redis-py's
# "wait forever" socket default. Users override any of these in "options".
DEFAULT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": 1.0,
    "health_check_interval": 30,
}
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF_BASE = 0.02
DEFAULT_BACKOFF_CAP = 0.2
DEFAULT_RETRY_AFTER = 5
DEFAULT_MAX_CONFLICT_RETRIES = 50
# WAIT blocks the request: well under the default socket_timeout, which would
# otherwise cut the reply off first.
DEFAULT_WAIT_TIMEOUT = 500
# Reading from replicas would break read-your-writes: a session saved by one
# request (a login) could be missing in the next one.
REPLICA_READ_OPTIONS = ("read_from_replicas", "load_balancing_strategy")

Address = tuple[str, int]


@dataclass(frozen=True)
class Config:
    url: str = DEFAULT_URL
    prefix: str = DEFAULT_PREFIX
    options: Mapping[str, Any] = field(default_factory=dict)
    client: str | None = None
    async_client: str | None = None
    on_unavailable: str = "error"
    retry_after: int = DEFAULT_RETRY_AFTER
    max_bytes: int | None = None
    compress_min_bytes: int | None = None
    max_conflict_retries: int = DEFAULT_MAX_CONFLICT_RETRIES
    # Redis Sentinel: redis-py's Sentinel(sentinels, sentinel_kwargs=sentinel_options)
    # and master_for(service_name).
    sentinels: tuple[Address, ...] = ()
    service_name: str | None = None
    sentinel_options: Mapping[str, Any] = field(default_factory=dict)
    # Redis Cluster: redis-py's RedisCluster, from ``url`` and/or ``startup_nodes``.
    cluster: bool = False
    startup_nodes: tuple[Address, ...] = ()
    # Durability: after each write, WAIT until this many replicas have it.
    wait_replicas: int = 0
    wait_timeout: int = DEFAULT_WAIT_TIMEOUT
    # The keys that are no core setting, as given: each feature parses its own
    # (``plan`` builds them and refuses the keys nobody owns).
    features: Mapping[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def wait(self) -> tuple[int, int]:
        """What each write waits for: (replicas, timeout in ms); (0, 0) for nothing.
        Read by every operation: computed once per configuration."""
        return (self.wait_replicas, self.wait_timeout) if self.wait_replicas else (0, 0)

    @property
    def topology(self) -> str:
        """``"sentinel"``, ``"cluster"`` or ``"single"``."""
        if self.sentinels:
            return "sentinel"
        return "cluster" if self.cluster else "single"


KNOWN_KEYS = frozenset(Config.__dataclass_fields__) - {"features"}


# Validators, shared with the features' own parsers ------------------------------------


def fail(key: str | None, message: str) -> ImproperlyConfigured:
    """The error for a bad setting, naming the key (and never printing a secret)."""
    where = f'{SETTING}["{key}"]' if key else SETTING
    return ImproperlyConfigured(f"{where}: {message}")


_fail = fail


def positive_int(raw: Mapping[str, Any], key: str, *, optional: bool) -> Any:
    value = raw.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(key, f"must be a positive integer, got {value!r}.")
    return value


def dotted_path(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or "." not in value:
        raise _fail(key, f"must be a dotted path to a callable, got {value!r}.")
    return value


_PASSWORD_PARAM = re.compile(r"(?i)(\bpassword=)[^&]*")


def shown_url(url: str) -> str:
    """A URL for an error message: credentials (userinfo, ?password=) masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the URL"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = _PASSWORD_PARAM.sub(r"\1***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return repr(url)
    shown = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    return repr(shown)


def validate_url(url: Any, *, host_required: bool = True) -> str:
    if not isinstance(url, str):
        raise _fail("url", f"must be a string, got a {type(url).__name__}.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise _fail("url", f"{shown_url(url)} is not a valid URL ({exc}).") from exc
    if parts.scheme not in URL_SCHEMES:
        raise _fail("url", f"{shown_url(url)} must start with redis://, rediss:// or unix://.")
    if parts.scheme == "unix" and not parts.path:
        raise _fail("url", f"{shown_url(url)} names no socket path.")
    if parts.scheme != "unix" and host_required and not parts.hostname:
        raise _fail("url", f"{shown_url(url)} names no host.")
    return url


def non_negative_int(raw: Mapping[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(key, f"must be an integer >= 0, got {value!r}.")
    return value


def _addresses(raw: Mapping[str, Any], key: str) -> tuple[Address, ...]:
    """A non-empty list of ``(host, port)`` pairs, as redis-py takes them."""
    value = raw.get(key)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise _fail(key, f"must be a non-empty list of (host, port) pairs, got {value!r}.")
    addresses = []
    for item in value:
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
            raise _fail(key, f"{item!r} is not a (host, port) pair.")
        host, port = item
        if not isinstance(host, str) or not host:
            raise _fail(key, f"{item!r}: the host must be a non-empty string.")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise _fail(key, f"{item!r}: the port must be an integer from 1 to 65535.")
        addresses.append((host, port))
    return tuple(addresses)


def _mapping(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise _fail(key, f"must be a dict of connection arguments, got a {type(value).__name__}.")
    return dict(value)


def _sentinel_url(raw: Mapping[str, Any], service_name: str) -> str:
    """The URL's scheme, credentials and db apply; the sentinels name the host."""
    if "url" not in raw:
        return SENTINEL_URL
    url = validate_url(raw["url"], host_required=False)
    parts = urlsplit(url)
    if parts.scheme == "unix":
        raise _fail(
            "url", "must be redis:// or rediss:// with sentinels (they give TCP addresses)."
        )
    if parts.hostname not in (None, service_name.lower()) or parts.port is not None:
        raise _fail(
            "url",
            f"{shown_url(url)} names a host, but with sentinels the primary's address comes "
            f"from them: leave it out (e.g. redis://:password@/0), or write the "
            f"service name ({service_name!r}) in its place.",
        )
    return url


def _cluster_url(raw: Mapping[str, Any], startup_nodes: tuple[Address, ...]) -> str:
    if "url" not in raw:
        if startup_nodes:
            host, port = startup_nodes[0]
            return f"redis://{host}:{port}/0"
        return DEFAULT_URL
    url = validate_url(raw["url"])
    parts = urlsplit(url)
    if parts.scheme == "unix":
        raise _fail("url", "Redis Cluster needs a redis:// or rediss:// startup node.")
    if parts.path.strip("/") not in ("", "0") or "db=" in parts.query:
        raise _fail("url", f"{shown_url(url)}: Redis Cluster has only database 0.")
    return url


def parse(raw: Any) -> Config:
    """Validate a ``SESSION_REDIS`` value and return it as a :class:`Config`."""
    if raw is None:
        return Config()
    if not isinstance(raw, Mapping):
        raise _fail(None, f"must be a dict, got {type(raw).__name__}.")
    prefix = raw.get("prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str):
        raise _fail("prefix", f"must be a string, got {prefix!r}.")
    options = raw.get("options", {})
    if not isinstance(options, Mapping):
        raise _fail(
            "options",
            f"must be a dict of connection pool arguments, got a {type(options).__name__}.",
        )
    on_unavailable = raw.get("on_unavailable", "error")
    if on_unavailable not in ON_UNAVAILABLE:
        raise _fail("on_unavailable", f"must be 'error' or 'anonymous', got {on_unavailable!r}.")
    for key in REPLICA_READ_OPTIONS:
        if key in options:
            raise _fail(
                "options",
                f"{key!r} is not supported: sessions are read from the primary, so a "
                "request always sees what the previous one saved (e.g. a login).",
            )
    topology = _topology(raw)
    wait_replicas = non_negative_int(raw, "wait_replicas", 0)
    wait_timeout = positive_int(
        {"wait_timeout": DEFAULT_WAIT_TIMEOUT, **raw}, "wait_timeout", optional=False
    )
    socket_timeout = options.get("socket_timeout", DEFAULT_OPTIONS["socket_timeout"])
    if wait_replicas and socket_timeout is not None and wait_timeout >= socket_timeout * 1000:
        raise _fail(
            "wait_timeout",
            f"{wait_timeout} ms must be shorter than the socket timeout "
            f"({socket_timeout} s), or the socket gives up before WAIT answers.",
        )
    return Config(
        prefix=prefix,
        options=dict(options),
        client=dotted_path(raw, "client"),
        async_client=dotted_path(raw, "async_client"),
        on_unavailable=on_unavailable,
        retry_after=positive_int(
            {"retry_after": DEFAULT_RETRY_AFTER, **raw}, "retry_after", optional=False
        ),
        max_bytes=positive_int(raw, "max_bytes", optional=True),
        compress_min_bytes=positive_int(raw, "compress_min_bytes", optional=True),
        max_conflict_retries=positive_int(
            {"max_conflict_retries": DEFAULT_MAX_CONFLICT_RETRIES, **raw},
            "max_conflict_retries",
            optional=False,
        ),
        wait_replicas=wait_replicas,
        wait_timeout=wait_timeout,
        features={key: value for key, value in raw.items() if key not in KNOWN_KEYS},
        **topology,
    )


def flag(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise _fail(key, f"must be True or False, got {value!r}.")
    return value


def _topology(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The Config fields that say where Redis is: single server, Sentinel or Cluster."""
    cluster = raw.get("cluster", False)
    if not isinstance(cluster, bool):
        raise _fail("cluster", f"must be True or False, got {cluster!r}.")
    if "sentinels" in raw:
        if cluster:
            raise _fail("cluster", 'cannot be combined with "sentinels": choose one.')
        sentinels = _addresses(raw, "sentinels")
        service_name = raw.get("service_name")
        if not isinstance(service_name, str) or not service_name:
            raise _fail(
                "service_name",
                f"must name the primary the sentinels monitor (e.g. 'mymaster'), "
                f"got {service_name!r}.",
            )
        return {
            "url": _sentinel_url(raw, service_name),
            "sentinels": sentinels,
            "service_name": service_name,
            "sentinel_options": _mapping(raw, "sentinel_options"),
        }
    for key in ("service_name", "sentinel_options"):
        if key in raw:
            raise _fail(key, 'only applies with "sentinels".')
    if cluster:
        if "db" in raw.get("options", {}):
            raise _fail("options", "'db' is not supported: Redis Cluster has only database 0.")
        startup_nodes = _addresses(raw, "startup_nodes") if "startup_nodes" in raw else ()
        return {
            "url": _cluster_url(raw, startup_nodes),
            "cluster": True,
            "startup_nodes": startup_nodes,
        }
    if "startup_nodes" in raw:
        raise _fail("startup_nodes", 'only applies with "cluster": True.')
    return {"url": validate_url(raw.get("url", DEFAULT_URL))}


@functools.cache
def get_config() -> Config:
    return parse(getattr(settings, SETTING, None))


# Settings that the parsed configuration (and what is built from it) depends on.
WATCHED = (SETTING, "SESSION_COOKIE_AGE")


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    # A new Config object: everything cached per configuration (the plan, the
    # clients) is built again, see ``plan``.
    if setting in WATCHED:
        get_config.cache_clear()
