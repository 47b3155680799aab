"""``manage.py create_demo_user``: the demo's login, created or reset on every start."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

DEFAULT_USERNAME = "demo"
DEFAULT_PASSWORD = "demo-password"


class Command(BaseCommand):
    help = "Create the demo user (or reset its password) so the printed credentials work."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=os.environ.get("DEMO_USERNAME", DEFAULT_USERNAME))
        parser.add_argument("--password", default=os.environ.get("DEMO_PASSWORD", DEFAULT_PASSWORD))

    def handle(self, *args: Any, **options: Any) -> None:
        user, created = get_user_model().objects.get_or_create(username=options["username"])
        user.set_password(options["password"])
        user.save()
        verb = "Created" if created else "Reset the password of"
        self.stdout.write(f"{verb} demo user {user.get_username()!r}.")
