"""System checks for settings that are valid but probably not what was meant."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

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


def _our_middleware_in_use() -> str | None:
    """The MIDDLEWARE entry that is ours (or a subclass), unless Django's own is there too."""
    from django_redis_sessions.middleware import SessionMiddleware

    if DJANGO_MIDDLEWARE in settings.MIDDLEWARE:
        return None  # Django's checks already speak about the session cookie
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
