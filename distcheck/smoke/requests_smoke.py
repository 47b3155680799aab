"""Requests through the installed middleware: a session is saved, then loaded again."""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

import django

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.test import Client  # noqa: E402

import django_redis_sessions  # noqa: E402
from django_redis_sessions import codec  # noqa: E402

client = Client()
bodies = [client.get("/").content.decode() for _ in range(3)]
cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
stored: bytes | None = redis.Redis.from_url(os.environ["SMOKE_REDIS_URL"]).get(  # type: ignore[assignment]
    "smoke:" + codec.digest(cookie)
)
print(
    json.dumps(
        {
            "bodies": bodies,
            "stored": stored.decode() if stored else None,
            "module": django_redis_sessions.__file__,
            "version": django_redis_sessions.__version__,
            "python": sys.executable,
        }
    )
)
