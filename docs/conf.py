"""Sphinx configuration of the manual (``tox -e docs``; no network at build time)."""

from __future__ import annotations

import sys
from pathlib import Path

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).parent / "_ext")]

# Autodoc imports the package and the commands' --help is generated: both need
# Django configured. Nothing here connects to Redis.
settings.configure(
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django_redis_sessions",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    SESSION_ENGINE="django_redis_sessions.session",
    USE_TZ=True,
)
django.setup()

import django_redis_sessions  # noqa: E402

project = "django-redis-sessions"
author = "django-redis-sessions maintainers"
copyright = "django-redis-sessions maintainers"
release = django_redis_sessions.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "commandhelp",
]
exclude_patterns = ["_build"]
root_doc = "index"
nitpicky = True
# No intersphinx: the build has no network to fetch other projects' inventories.
# References to their objects (from signatures and docstrings) cannot resolve, so
# they are left as plain text, by package, here; a reference to anything of ours
# that does not resolve is still an error.
nitpick_ignore_regex = [
    # Django's classes (HttpRequest, SessionBase, AbstractBaseUser, Signal, ...).
    ("py:class", r"django\..*"),
    ("py:exc", r"django\..*"),
    # redis-py's errors, named in SessionUnavailable's documentation.
    ("py:exc", r"redis\..*"),
    ("py:class", r"redis\..*"),
    # The standard library's, as autodoc writes them from annotations.
    ("py:class", r"(datetime\.)?datetime"),
    ("py:class", r"collections\.abc\..*"),
    ("py:class", r"HttpRequest|HttpResponseBase|HttpResponse|SessionBase|User"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"

html_theme = "furo"
html_title = f"django-redis-sessions {release}"
html_static_path: list[str] = []
# The chart is referenced from benchmarks/, outside this folder.
html_copy_source = False
