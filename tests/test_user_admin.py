"""``manage.py end_sessions`` and the admin actions on users."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client, modify_settings, override_settings

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


def test_end_sessions_command_lists_no_sessions_in_words(ada: User) -> None:
    out = StringIO()
    call_command("end_sessions", "ada", "--list", stdout=out)
    assert out.getvalue() == "'ada' has no sessions.\n"


def test_end_sessions_command_unknown_user(db: None) -> None:
    with pytest.raises(CommandError, match="No user with username 'nobody'"):
        call_command("end_sessions", "nobody")


@pytest.fixture
def admin_site() -> Iterator[Client]:
    """The test site with django.contrib.admin, and a signed-in superuser's client."""
    with (
        modify_settings(INSTALLED_APPS={"append": "django.contrib.admin"}),
        override_settings(ROOT_URLCONF="tests.admin_urls"),
    ):
        root = User.objects.create_superuser("root", password="pw")
        client = Client()
        client.force_login(root)
        yield client


def test_admin_shows_a_users_sessions(admin_site: Client, ada: User) -> None:
    signed_in("Mozilla/5.0 (X11; Linux x86_64) Firefox/135.0")
    response = admin_site.post(
        "/admin/auth/user/", {"action": "show_sessions", "_selected_action": [ada.pk]}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Firefox on Linux" in html
    assert "<h2>ada</h2>" in html


def test_admin_ends_all_sessions_of_the_selected(admin_site: Client, ada: User) -> None:
    clients = [signed_in("Firefox"), signed_in("Chrome")]
    response = admin_site.post(
        "/admin/auth/user/",
        {"action": "end_all_sessions", "_selected_action": [ada.pk]},
        follow=True,
    )
    assert "Ended 2 session(s) of 1 user(s)." in response.content.decode()
    assert [whoami(c) for c in clients] == ["anonymous", "anonymous"]


def test_admin_actions_attach_once_and_only_to_a_registered_user_model(
    admin_site: Client,
) -> None:
    from django.contrib import admin

    from django_redis_sessions import admin as session_admin

    session_admin.add_user_actions()  # again: no duplicates
    model_admin = admin.site._registry[User]
    assert list(model_admin.actions or ()).count(session_admin.show_sessions) == 1
    session_admin.add_user_actions(admin.AdminSite())  # no user model there: nothing to do
