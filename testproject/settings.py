"""Settings for the demo site: Django's auth, messages and sessions, kept in Redis.

Everything machine-specific comes from the environment, which the demo launcher
(``testproject.demo``) and the end-to-end tests set for each app server.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_redis_sessions",
    "testproject",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django_redis_sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "testproject.urls"
WSGI_APPLICATION = "testproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # First, so that its django_redis_sessions/ overrides the shipped template.
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csrf",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "testproject.context_processors.demo",
            ],
        },
    },
]

# The app servers share this database (users) the way they share Redis (sessions).
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "DEMO_DB", str(Path(tempfile.gettempdir()) / "django-redis-sessions-demo.sqlite3")
        ),
    }
}

# Another engine (e.g. Django's db engine) to show a migration from it.
SESSION_ENGINE = os.environ.get("DEMO_SESSION_ENGINE") or "django_redis_sessions.session"
SESSION_REDIS = {
    "url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    "prefix": "demo:session:",
}
# A whole SESSION_REDIS as JSON (e.g. for a Sentinel group or a Cluster) wins over REDIS_URL.
if os.environ.get("DEMO_SESSION_REDIS"):
    SESSION_REDIS = {"prefix": "demo:session:", **json.loads(os.environ["DEMO_SESSION_REDIS"])}
SESSION_COOKIE_AGE = int(os.environ.get("DEMO_SESSION_AGE", str(60 * 60 * 24 * 14)))

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "counter"
LOGOUT_REDIRECT_URL = "counter"

USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# Shown on every page so you can see which app server answered.
SERVER_NAME = os.environ.get("DEMO_SERVER_NAME", socket.gethostname())
# The other app servers' base URLs (comma-separated), linked from every page.
DEMO_SERVERS = [url for url in os.environ.get("DEMO_SERVERS", "").split(",") if url]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
