"""A minimal site using the installed engine, as a new user would set it up."""

from __future__ import annotations

import os

SECRET_KEY = "smoke-test-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django_redis_sessions",
]
MIDDLEWARE = [
    "django_redis_sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "smoke_urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(os.path.dirname(__file__), "smoke.sqlite3"),
    }
}
USE_TZ = True
SESSION_ENGINE = "django_redis_sessions.session"
SESSION_REDIS = {"url": os.environ["SMOKE_REDIS_URL"], "prefix": "smoke:"}
