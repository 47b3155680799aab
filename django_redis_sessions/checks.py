"""System checks for settings that are valid but probably not what was meant."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

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


def register() -> None:
    checks.register(check_serializer, checks.Tags.compatibility)
