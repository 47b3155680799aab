"""``manage.py end_sessions USERNAME``: sign a user out everywhere, now."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_redis_sessions import users


class Command(BaseCommand):
    help = (
        "End every session of a user (kept in Redis): each of their devices is signed out "
        "on its next request. Prints how many sessions were ended."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="The user's username (USERNAME_FIELD).")
        parser.add_argument(
            "--keep-none",
            action="store_true",
            default=True,
            help="End all of the user's sessions, sparing none (the default).",
        )
        parser.add_argument(
            "--list",
            action="store_true",
            help="Only list the user's sessions; end nothing.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        username = options["username"]
        try:
            user = model._default_manager.get_by_natural_key(username)
        except model.DoesNotExist as exc:
            raise CommandError(f"No user with {model.USERNAME_FIELD} {username!r}.") from exc
        if options["list"]:
            sessions = users.get_sessions(user)
            if not sessions:
                self.stdout.write(f"{username!r} has no sessions.")
            for session in sessions:
                self.stdout.write(
                    f"{session.id}  last seen {session.last_seen:%Y-%m-%d %H:%M:%S}  "
                    f"{session.ip or '-'}  {session.device}"
                )
            return
        ended = users.end_sessions(user)
        self.stdout.write(f"Ended {ended} session(s) of {username!r}.")
