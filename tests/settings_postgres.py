"""The test settings on PostgreSQL (tests/test_migration_postgres.py runs a process with them)."""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "USER": os.environ.get("TEST_PG_USER", "postgres"),
        "NAME": os.environ["TEST_PG_DATABASE"],
    }
}
