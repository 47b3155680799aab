"""The ``SESSION_REDIS`` setting: defaults, validation and a cached, typed view."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

SETTING = "SESSION_REDIS"
DEFAULT_URL = "redis://localhost:6379/0"
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
DEFAULT_MAX_CONFLICT_RETRIES = 10


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


KNOWN_KEYS = frozenset(Config.__dataclass_fields__)


def _fail(key: str | None, message: str) -> ImproperlyConfigured:
    where = f'{SETTING}["{key}"]' if key else SETTING
    return ImproperlyConfigured(f"{where}: {message}")


def _positive_int(raw: Mapping[str, Any], key: str, *, optional: bool) -> Any:
    value = raw.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(key, f"must be a positive integer, got {value!r}.")
    return value


def _dotted_path(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or "." not in value:
        raise _fail(key, f"must be a dotted path to a callable, got {value!r}.")
    return value


def validate_url(url: Any) -> str:
    if not isinstance(url, str):
        raise _fail("url", f"must be a string, got {url!r}.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise _fail("url", f"{url!r} is not a valid URL ({exc}).") from exc
    if parts.scheme not in URL_SCHEMES:
        raise _fail("url", f"{url!r} must start with redis://, rediss:// or unix://.")
    if parts.scheme == "unix" and not parts.path:
        raise _fail("url", f"{url!r} names no socket path.")
    if parts.scheme != "unix" and not parts.hostname:
        raise _fail("url", f"{url!r} names no host.")
    return url


def parse(raw: Any) -> Config:
    """Validate a ``SESSION_REDIS`` value and return it as a :class:`Config`."""
    if raw is None:
        return Config()
    if not isinstance(raw, Mapping):
        raise _fail(None, f"must be a dict, got {type(raw).__name__}.")
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise _fail(
            None,
            f"unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys are {', '.join(sorted(KNOWN_KEYS))}.",
        )
    prefix = raw.get("prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str):
        raise _fail("prefix", f"must be a string, got {prefix!r}.")
    options = raw.get("options", {})
    if not isinstance(options, Mapping):
        raise _fail("options", f"must be a dict of connection pool arguments, got {options!r}.")
    on_unavailable = raw.get("on_unavailable", "error")
    if on_unavailable not in ON_UNAVAILABLE:
        raise _fail("on_unavailable", f"must be 'error' or 'anonymous', got {on_unavailable!r}.")
    return Config(
        url=validate_url(raw.get("url", DEFAULT_URL)),
        prefix=prefix,
        options=dict(options),
        client=_dotted_path(raw, "client"),
        async_client=_dotted_path(raw, "async_client"),
        on_unavailable=on_unavailable,
        retry_after=_positive_int({"retry_after": DEFAULT_RETRY_AFTER, **raw}, "retry_after", optional=False),
        max_bytes=_positive_int(raw, "max_bytes", optional=True),
        compress_min_bytes=_positive_int(raw, "compress_min_bytes", optional=True),
        max_conflict_retries=_positive_int(
            {"max_conflict_retries": DEFAULT_MAX_CONFLICT_RETRIES, **raw},
            "max_conflict_retries",
            optional=False,
        ),
    )


@functools.cache
def get_config() -> Config:
    return parse(getattr(settings, SETTING, None))


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTING, "SESSION_COOKIE_AGE"):
        get_config.cache_clear()
        from django_redis_sessions import connection

        connection.reset()
