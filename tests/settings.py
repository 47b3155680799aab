from __future__ import annotations

import json
import os

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_redis_sessions",
]

MIDDLEWARE = [
    "django_redis_sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # A file when the site is served by a real server process (test_asgi.py).
        "NAME": os.environ.get("TEST_DATABASE", ":memory:"),
    }
}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.contrib.messages.context_processors.messages"]},
    }
]

SESSION_ENGINE = "django_redis_sessions.session"
# The test suite points this at the Redis it starts (tests/conftest.py); a server
# process started by a test gets the same settings as JSON.
SESSION_REDIS = (
    json.loads(os.environ["TEST_SESSION_REDIS"])
    if "TEST_SESSION_REDIS" in os.environ
    else {"url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")}
)

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
