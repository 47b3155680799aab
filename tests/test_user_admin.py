"""``manage.py end_sessions`` and the admin actions on users."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from django_redis_sessions import users

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(db: None) -> User:
    return User.objects.create_user("ada", password="pw")


def signed_in(agent: str, username: str = "ada") -> Client:
    client = Client(HTTP_USER_AGENT=agent)
    assert client.get(f"/login/?username={username}").status_code == 200
    return client


def whoami(client: Client) -> str:
    return client.get("/whoami/").content.decode()


def test_end_sessions_command_ends_all_and_prints_the_count(ada: User) -> None:
    User.objects.create_user("bob", password="pw")
    adas = [signed_in("Firefox"), signed_in("Chrome")]
    bobs = signed_in("Safari", username="bob")
    out = StringIO()
    call_command("end_sessions", "ada", stdout=out)
    assert out.getvalue() == "Ended 2 session(s) of 'ada'.\n"
    assert [whoami(c) for c in adas] == ["anonymous", "anonymous"]
    assert whoami(bobs) == "bob"
    out = StringIO()
    call_command("end_sessions", "ada", "--keep-none", stdout=out)
    assert out.getvalue() == "Ended 0 session(s) of 'ada'.\n"


def test_end_sessions_command_lists(ada: User) -> None:
    client = signed_in("Mozilla/5.0 (X11; Linux x86_64) Firefox/135.0")
    out = StringIO()
    call_command("end_sessions", "ada", "--list", stdout=out)
    (line,) = out.getvalue().splitlines()
    assert line.startswith(users.get_sessions(ada)[0].id)
    assert line.endswith("Firefox on Linux")
    assert whoami(client) == "ada"


def test_end_sessions_command_unknown_user(db: None) -> None:
    with pytest.raises(CommandError, match="No user with username 'nobody'"):
        call_command("end_sessions", "nobody")
