"""``manage.py migrate_sessions``: copy every live session of the old store into Redis.

Idempotent (``SET NX``: what Redis already holds is never overwritten), so an
interrupted run is resumed by running it again. Each session keeps its remaining
lifetime; the old store is left as it is.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_redis_sessions import driver, migration, plan
from django_redis_sessions.exceptions import SessionUnavailable
from django_redis_sessions.migration import Outcome
from django_redis_sessions.session import SessionStore

REPORTED = [outcome for outcome in Outcome if outcome is not Outcome.MISSING]
# Outcomes that mean a session could not be read at all: the exit status says so.
FAILURES = (Outcome.BAD_SIGNATURE, Outcome.UNREADABLE)
SETUP_ERRORS: tuple[type[BaseException], ...] = (ImproperlyConfigured, *migration.SOURCE_ERRORS)
STOP_ERRORS: tuple[type[BaseException], ...] = (SessionUnavailable, *migration.SOURCE_ERRORS)


class Command(BaseCommand):
    help = (
        'Copy every live session of SESSION_REDIS["migrate_from"] into Redis, with its '
        "remaining lifetime, never overwriting a session Redis already has."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Read and count everything, write nothing.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="Sessions read per query or SCAN step (default 500).",
        )

    def handle(self, *args: Any, dry_run: bool, batch_size: int, **options: Any) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        active = plan.get_plan()
        config = active.config
        if active.migration is None:
            raise CommandError(
                'Set SESSION_REDIS["migrate_from"] to the engine the site used before '
                '(e.g. "django.contrib.sessions.backends.db").'
            )
        try:
            source = migration.source_for(config)
            total = source.count()
        except SETUP_ERRORS as exc:
            raise CommandError(str(exc)) from exc
        verb = "Counting (dry run)" if dry_run else "Copying"
        sized = f"{total} live sessions from " if total is not None else ""
        self.stdout.write(f"{verb} {sized}{source.description}")
        counts: Counter[Outcome] = Counter()
        progress = self.stdout.isatty()
        done = 0
        try:
            counts[Outcome.EXPIRED] += source.expired_count()
            for batch in source.records(batch_size):
                for key, record in batch:
                    if record.outcome is Outcome.MISSING:
                        continue  # gone since it was listed
                    steps = migration.copy_session(SessionStore(), key, record, dry_run)
                    counts[driver.run(steps)] += 1
                done += len(batch)
                if progress:
                    self.stdout.write(self._progress(done, total, counts), ending="\r")
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        except STOP_ERRORS as exc:
            self._summary(counts, dry_run)
            raise CommandError(
                f"Stopped after {done} sessions: {exc}. Run the command again to resume; "
                "sessions already copied are skipped."
            ) from exc
        if progress:
            self.stdout.write("")
        self._summary(counts, dry_run)
        failed = sum(counts[outcome] for outcome in FAILURES)
        if failed:
            raise CommandError(
                f"{failed} sessions could not be read (bad signature: add the old "
                "SECRET_KEY to SECRET_KEY_FALLBACKS; unreadable: not a session value)."
            )

    def _progress(self, done: int, total: int | None, counts: Counter[Outcome]) -> str:
        of = f"/{total}" if total is not None else ""
        return f"{done}{of} read, {counts[Outcome.COPIED]} copied"

    def _summary(self, counts: Counter[Outcome], dry_run: bool) -> None:
        for outcome in REPORTED:
            label = outcome.value
            if dry_run and outcome is Outcome.COPIED:
                label = "to copy"
            self.stdout.write(f"{label}: {counts[outcome]}")
