"""The shipped "your sessions" pages: ``include("django_redis_sessions.urls")``."""

from __future__ import annotations

import re

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from django_redis_sessions import codec, users

pytestmark = pytest.mark.django_db
COOKIE = settings.SESSION_COOKIE_NAME
LIST = "/account/sessions/"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:135.0) Gecko/20100101 Firefox/135.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.2 Mobile/15E148 Safari/604.1"
)


@pytest.fixture
def ada(db: None) -> User:
    return User.objects.create_user("ada", password="pw")


def signed_in(agent: str, username: str = "ada", ip: str = "10.0.0.1") -> Client:
    client = Client(enforce_csrf_checks=True, HTTP_USER_AGENT=agent, REMOTE_ADDR=ip)
    assert client.get(f"/login/?username={username}").status_code == 200
    return client


def digest_of(client: Client) -> str:
    return codec.digest(client.cookies[COOKIE].value)


def post(client: Client, url: str) -> int:
    """A form POST with the CSRF token of the page, as a browser sends it."""
    page = client.get(LIST)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token is not None
    return client.post(url, {"csrfmiddlewaretoken": token[1]}).status_code


def whoami(client: Client) -> str:
    return client.get("/whoami/").content.decode()


def test_list_shows_devices_and_this_device(ada: User) -> None:
    signed_in(SAFARI_IPHONE, ip="192.0.2.7")
    here = signed_in(FIREFOX)
    page = here.get(LIST)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Firefox on Linux" in html and "Safari on iPhone" in html
    assert "192.0.2.7" in html
    assert html.count("This device") == 1
    rows = re.findall(r'data-session="([0-9a-f]{32})"', html)
    assert rows == [digest_of(here), rows[1]]  # newest first, the current one on top
    assert here.cookies[COOKIE].value not in html  # handles only, never session keys


def test_pages_need_a_signed_in_user(db: None) -> None:
    client = Client()
    response = client.get(LIST)
    assert response.status_code == 302
    assert response["Location"].startswith(str(settings.LOGIN_URL))
    assert client.post(LIST + "others/end/").status_code in (302, 403)


def test_changes_need_post_and_csrf(ada: User) -> None:
    here = signed_in(FIREFOX)
    other = signed_in("Chrome")
    url = f"{LIST}{digest_of(other)}/end/"
    assert here.get(url).status_code == 405
    assert here.post(url).status_code == 403  # no CSRF token
    assert here.post(LIST + "others/end/").status_code == 403
    assert whoami(other) == "ada"


def test_sign_out_one_other_session(ada: User) -> None:
    here = signed_in(FIREFOX)
    other = signed_in("Chrome")
    assert post(here, f"{LIST}{digest_of(other)}/end/") == 302
    assert whoami(other) == "anonymous"
    assert whoami(here) == "ada"


def test_sign_out_this_device_logs_out(ada: User, r: redis.Redis) -> None:
    here = signed_in(FIREFOX)
    assert post(here, f"{LIST}{digest_of(here)}/end/") == 302
    assert here.cookies[COOKIE].value == ""
    assert whoami(here) == "anonymous"
    assert users.get_sessions(ada) == []


def test_someone_elses_session_is_not_found_and_untouched(ada: User) -> None:
    User.objects.create_user("bob", password="pw")
    bobs = signed_in("Safari", username="bob")
    here = signed_in(FIREFOX)
    assert post(here, f"{LIST}{digest_of(bobs)}/end/") == 404
    assert post(here, f"{LIST}not-a-handle/end/") == 404
    assert whoami(bobs) == "bob"


def test_sign_out_all_other_sessions(ada: User) -> None:
    here = signed_in(FIREFOX)
    others = [signed_in("Chrome"), signed_in(SAFARI_IPHONE)]
    assert post(here, LIST + "others/end/") == 302
    assert [whoami(c) for c in others] == ["anonymous", "anonymous"]
    assert whoami(here) == "ada"
    assert [s.id for s in users.get_sessions(ada)] == [digest_of(here)]


@pytest.mark.parametrize(
    ("agent", "device"),
    [
        (FIREFOX, "Firefox on Linux"),
        (SAFARI_IPHONE, "Safari on iPhone"),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Mobile Safari/537.36",
            "Chrome on Android",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like "
            "Gecko) Version/18.1 Safari/605.1.15",
            "Safari on macOS",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/131.0.0.0 Safari/537.36",
            "Headless Chrome on Linux",
        ),
        ("curl/8.5.0", "curl/8.5.0"),
        ("x" * 300, "x" * 60),
        ("Opera/9.80", "Opera"),
        (None, "Unknown device"),
        ("", "Unknown device"),
    ],
)
def test_device_names(agent: str | None, device: str) -> None:
    assert users.describe_user_agent(agent) == device
