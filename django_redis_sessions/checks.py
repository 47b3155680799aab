"""System checks for settings that are valid but probably not what was meant."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from django_redis_sessions import conf

ENGINE = "django_redis_sessions.session"
JSON_SERIALIZER = "django.contrib.sessions.serializers.JSONSerializer"


def check_serializer(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    serializer = getattr(settings, "SESSION_SERIALIZER", JSON_SERIALIZER)
    if settings.SESSION_ENGINE == ENGINE and serializer != JSON_SERIALIZER:
        return [
            checks.Warning(
                f"SESSION_SERIALIZER = {serializer!r} is ignored: "
                "django_redis_sessions always stores JSON.",
                hint="Remove SESSION_SERIALIZER, or set it to JSONSerializer.",
                id="django_redis_sessions.W001",
            )
        ]
    return []


# Django's deploy checks (security.W011/W014) look for its middleware by its exact
# dotted path; these say the same about ours.
OUR_MIDDLEWARE = "django_redis_sessions.middleware.SessionMiddleware"
DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
SESSIONS_APP = "django.contrib.sessions"


def _our_middleware_in_use() -> str | None:
    """The MIDDLEWARE entry that is ours (or a subclass), unless Django's checks speak.

    They do when its middleware is listed (W012/W015) or its sessions app is
    installed (W010/W013, which README's settings give): one warning, not two.
    """
    from django_redis_sessions.middleware import SessionMiddleware

    if DJANGO_MIDDLEWARE in settings.MIDDLEWARE or SESSIONS_APP in settings.INSTALLED_APPS:
        return None
    for path in settings.MIDDLEWARE:
        try:
            middleware = import_string(path)
        except ImportError:
            continue  # Django reports a middleware that does not import
        if isinstance(middleware, type) and issubclass(middleware, SessionMiddleware):
            return str(path)
    return None


def check_session_cookie_secure(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    path = _our_middleware_in_use()
    if settings.SESSION_COOKIE_SECURE is True or path is None:
        return []
    return [
        checks.Warning(
            f"You have {path!r} in your MIDDLEWARE, but you have not set "
            "SESSION_COOKIE_SECURE to True. Using a secure-only session cookie makes it "
            "more difficult for network traffic sniffers to hijack user sessions.",
            id="django_redis_sessions.W011",
        )
    ]


def check_session_cookie_httponly(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    path = _our_middleware_in_use()
    if settings.SESSION_COOKIE_HTTPONLY is True or path is None:
        return []
    return [
        checks.Warning(
            f"You have {path!r} in your MIDDLEWARE, but you have not set "
            "SESSION_COOKIE_HTTPONLY to True. Using an HttpOnly session cookie makes it "
            "more difficult for cross-site scripting attacks to hijack user sessions.",
            id="django_redis_sessions.W014",
        )
    ]


def register() -> None:
    checks.register(check_serializer, checks.Tags.compatibility)
    checks.register(check_session_cookie_secure, checks.Tags.security, deploy=True)
    checks.register(check_session_cookie_httponly, checks.Tags.security, deploy=True)


# Deploy checks (``manage.py check --deploy``) ---------------------------------------
# Registered when this module is imported (by the app's ready()). They read
# settings only: no network at check time. Ids W101-W199 are theirs.

DJANGO_SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
REDIS_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_REDIS_PORT = 6379


def _ours() -> conf.Config | None:
    """SESSION_REDIS, when this engine stores the sessions and knows where Redis is."""
    if settings.SESSION_ENGINE != ENGINE:
        return None
    config = conf.get_config()
    # A client of the project's own: its address is not in the settings.
    return None if config.client is not None else config


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hosts(config: conf.Config) -> list[str]:
    """The hosts the engine connects to, as the settings name them."""
    if config.sentinels:
        return [host for host, _ in config.sentinels]
    # Without sentinels a redis:// URL always names its host (conf validates it).
    return [host for host, _ in config.startup_nodes] + [urlsplit(config.url).hostname or ""]


@checks.register(checks.Tags.security, deploy=True)
def check_plain_text_transport(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    config = _ours()
    if config is None or urlsplit(config.url).scheme != "redis":
        return []
    remote = sorted({host for host in _hosts(config) if not _is_loopback(host)})
    if not remote:
        return []
    return [
        checks.Warning(
            f"Sessions travel to Redis at {', '.join(remote)} unencrypted (redis://): "
            "a session is a login credential, and its data and the Redis password "
            "can be read on the network.",
            hint='Use rediss:// in SESSION_REDIS["url"] (TLS), or a unix:// socket '
            "when Redis runs on the same machine.",
            id="django_redis_sessions.W101",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_replicated_writes(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    config = _ours()
    if config is None or config.topology == "single" or config.wait_replicas:
        return []
    return [
        checks.Warning(
            f"SESSION_REDIS uses Redis {config.topology.capitalize()} without "
            '"wait_replicas": a failover loses the writes the old primary had not '
            "yet replicated, so users who just logged in are logged out again and "
            "sessions deleted at logout can come back.",
            hint='Set SESSION_REDIS["wait_replicas"] = 1 (with at least two replicas '
            "per primary, so one can be down), or accept those losses.",
            id="django_redis_sessions.W102",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_anonymous_on_outage(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    config = _ours()
    if config is None or config.on_unavailable != "anonymous":
        return []
    if AUTH_MIDDLEWARE not in settings.MIDDLEWARE:
        return []
    return [
        checks.Warning(
            'SESSION_REDIS["on_unavailable"] = "anonymous" with '
            "AuthenticationMiddleware: while Redis is unreachable every signed-in "
            "user is anonymous, pages that require a login redirect to the login "
            "page, and a login there seems to work but is not saved.",
            hint='Use the default "error" (a 503 with Retry-After) unless every '
            "page works for anonymous users.",
            id="django_redis_sessions.W103",
        )
    ]


def _location(url: str) -> tuple[str, ...] | None:
    """A Redis server and database, comparable across spellings of the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in REDIS_SCHEMES:
        return None
    query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
    if parts.scheme == "unix":
        return ("unix", parts.path, query.get("db", "0"))
    host = (parts.hostname or "localhost").lower()
    host = "loopback" if _is_loopback(host) else host
    db = parts.path.strip("/") or query.get("db", "0")
    return ("tcp", host, str(port or DEFAULT_REDIS_PORT), db)


def _cache_locations(cache: Mapping[str, Any]) -> list[str]:
    location = cache.get("LOCATION", "")
    if isinstance(location, str):
        return [part.strip() for part in location.split(",") if part.strip()]
    return [str(part) for part in location]


@checks.register(checks.Tags.caches, deploy=True)
def check_shared_with_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    config = _ours()
    if config is None or config.sentinels:
        return []
    ours = {_location(config.url)} | {
        _location(f"redis://{host}:{port}/0") for host, port in config.startup_nodes
    }
    messages: list[checks.CheckMessage] = []
    for alias, cache in getattr(settings, "CACHES", {}).items():
        if not ours & {_location(url) for url in _cache_locations(cache)}:
            continue
        cache_prefix = f"{cache.get('KEY_PREFIX', '')}:"
        overlap = "KEY_FUNCTION" not in cache and (
            config.prefix.startswith(cache_prefix) or cache_prefix.startswith(config.prefix)
        )
        if overlap:
            messages.append(
                checks.Warning(
                    f'CACHES["{alias}"] keeps its keys in the sessions\' Redis database '
                    f"with a key prefix that overlaps theirs ({cache_prefix!r} and "
                    f"{config.prefix!r}): cache keys and session keys can collide, and "
                    "cache tools that match keys by pattern reach the sessions.",
                    hint='Give SESSION_REDIS["prefix"] and the cache\'s KEY_PREFIX '
                    "distinct values, or better, put the cache in another database.",
                    id="django_redis_sessions.W104",
                )
            )
        else:
            messages.append(
                checks.Warning(
                    f'CACHES["{alias}"] uses the sessions\' Redis database: its clear() '
                    "(FLUSHDB) deletes every session and logs everybody out, and when "
                    "the cache fills Redis, its eviction can remove sessions.",
                    hint="Put the cache in another Redis database or server "
                    '(e.g. /1 in its LOCATION, /0 in SESSION_REDIS["url"]).',
                    id="django_redis_sessions.W105",
                )
            )
    return messages


@checks.register(checks.Tags.security, deploy=True)
def check_timeouts(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    config = _ours()
    if config is None:
        return []
    unbounded = [
        key
        for key in ("socket_timeout", "socket_connect_timeout")
        if key in config.options and config.options[key] is None
    ]
    if not unbounded:
        return []
    return [
        checks.Warning(
            f'SESSION_REDIS["options"] sets {" and ".join(unbounded)} to None: a Redis '
            "that hangs (or a network that drops packets) then hangs every request "
            "that uses the session, until all workers are stuck.",
            hint="Remove these keys to keep the defaults (1 s), or set a bound in seconds.",
            id="django_redis_sessions.W106",
        )
    ]


def _verification_off(value: Any) -> bool:
    return value is ssl.CERT_NONE or (isinstance(value, str) and value.lower() == "none")


@checks.register(checks.Tags.security, deploy=True)
def check_tls_verification(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    config = _ours()
    if config is None:
        return []
    query = dict(item.partition("=")[::2] for item in urlsplit(config.url).query.split("&"))
    options = {**query, **config.options}
    if not (
        _verification_off(options.get("ssl_cert_reqs"))
        or options.get("ssl_check_hostname") in (False, "false", "False")
    ):
        return []
    return [
        checks.Warning(
            "TLS to Redis does not verify the server (ssl_cert_reqs none or "
            "ssl_check_hostname false): anyone on the path can pose as Redis and "
            "read or forge every session.",
            hint='Give the CA in SESSION_REDIS["options"]["ssl_ca_certs"] and '
            "leave verification on.",
            id="django_redis_sessions.W107",
        )
    ]


@checks.register(checks.Tags.compatibility, deploy=True)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.SESSION_ENGINE != ENGINE or DJANGO_SESSION_MIDDLEWARE not in settings.MIDDLEWARE:
        return []
    return [
        checks.Warning(
            "MIDDLEWARE has Django's SessionMiddleware: while Redis is unreachable, "
            'requests end in a 500 (with on_unavailable="error") instead of our '
            "middleware's 503 with Retry-After, and async views hop to a thread "
            "for every session save.",
            hint=f'Replace "{DJANGO_SESSION_MIDDLEWARE}" with '
            '"django_redis_sessions.middleware.SessionMiddleware".',
            id="django_redis_sessions.W108",
        )
    ]
