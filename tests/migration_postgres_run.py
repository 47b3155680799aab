"""Run by tests/test_migration_postgres.py in a process of its own, on PostgreSQL.

Sessions made by Django's db engine, then read through ours (sync and async),
logged out, and copied in bulk; prints what it saw as JSON.
"""

from __future__ import annotations

import asyncio
import io
import json

import django

django.setup()

from django.contrib.sessions.backends.db import SessionStore as DbStore  # noqa: E402
from django.contrib.sessions.models import Session  # noqa: E402
from django.core.management import call_command  # noqa: E402

from django_redis_sessions.session import SessionStore  # noqa: E402


def made(**data: object) -> str:
    store = DbStore()
    store.update(data)
    store.set_expiry(600)
    store.save()
    assert store.session_key is not None
    return store.session_key


call_command("migrate", verbosity=0)
sync_key, async_key, logout_key = made(user="sync"), made(user="async"), made(user="bye")
bulk_keys = [made(n=n) for n in range(5)]
seen: dict[str, object] = {
    "sync": SessionStore(sync_key).load(),
    "async": asyncio.run(SessionStore(async_key).aload()),
}
bye = SessionStore(logout_key)
bye.load()
bye.flush()
seen["logout_row_left"] = Session.objects.filter(session_key=logout_key).exists()
seen["after_logout"] = SessionStore(logout_key).load()
out = io.StringIO()
call_command("migrate_sessions", "--batch-size", "2", stdout=out)
seen["bulk"] = out.getvalue()
seen["bulk_loaded"] = [SessionStore(key).load().get("n") for key in bulk_keys]
print(json.dumps(seen))
