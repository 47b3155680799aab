"""Sessions through the real request cycle: Django's test client, auth, messages, CSRF.

Each test runs with our middleware and with Django's own, which must work with
the engine unchanged.
"""

from __future__ import annotations

import django
import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User
from django.test import AsyncClient, Client, override_settings

from django_redis_sessions import codec
from django_redis_sessions.session import SessionStore
from tests.twins import command_calls, session_keys

COOKIE = settings.SESSION_COOKIE_NAME

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(db: None) -> User:
    return User.objects.create_user("ada", password="pw")


def test_counter_persists_and_varies_on_cookie(middleware: str, client: Client) -> None:
    assert [client.get("/counter/").content for _ in range(3)] == [b"1", b"2", b"3"]
    response = client.get("/counter/")
    assert response["Vary"] == "Cookie"
    assert response.cookies[COOKIE]["httponly"]
    assert int(response.cookies[COOKIE]["max-age"]) == settings.SESSION_COOKIE_AGE


def test_login_cycles_key_and_logout_deletes(
    middleware: str, client: Client, user: User, r: redis.Redis
) -> None:
    client.get("/counter/")
    before = client.cookies[COOKIE].value
    client.get("/login/?username=ada")
    after = client.cookies[COOKIE].value
    assert after != before
    assert client.get("/whoami/").content == b"ada"
    # The pre-login session is gone: the old cookie is worthless (no fixation).
    assert SessionStore(before).load() == {}
    assert session_keys(r) == [b"session:" + codec.digest(after).encode()]
    response = client.get("/logout/")
    assert response.cookies[COOKIE].value == ""
    assert client.get("/whoami/").content == b"anonymous"
    assert r.keys("session:*") == []  # the user's index went with the last session


def test_save_after_concurrent_logout_is_400(
    middleware: str, client: Client, user: User, r: redis.Redis
) -> None:
    client.get("/login/?username=ada")
    response = client.get("/concurrent-logout/")
    assert response.status_code == 400
    assert session_keys(r) == []  # not resurrected
    assert client.get("/whoami/").content == b"anonymous"


def test_async_save_after_concurrent_logout_is_400(middleware: str, r: redis.Redis) -> None:
    async def flow() -> int:
        client = AsyncClient()
        await client.get("/acounter/")
        return (await client.get("/aconcurrent-logout/")).status_code

    assert async_to_sync(flow)() == 400
    assert session_keys(r) == []


def test_expired_session_starts_fresh(middleware: str, client: Client, r: redis.Redis) -> None:
    client.get("/counter/")
    old = client.cookies[COOKIE].value
    r.delete(b"session:" + codec.digest(old).encode())  # what the TTL does
    assert client.get("/counter/").content == b"1"
    assert client.cookies[COOKIE].value != old


def test_garbage_cookie_is_no_session(middleware: str, client: Client, r: redis.Redis) -> None:
    client.cookies[COOKIE] = "x" * 10_000
    r.config_resetstat()
    assert client.get("/get/").json() == {}
    assert command_calls(r) == 0
    assert client.get("/counter/").content == b"1"
    assert codec.is_valid_session_key(client.cookies[COOKIE].value)


@pytest.mark.parametrize("cookie", ["12345678", "Forged-Key_of.any~SHAPE!", "k" * 256])
def test_unknown_well_formed_cookie_costs_one_get(
    middleware: str, client: Client, r: redis.Redis, cookie: str
) -> None:
    client.cookies[COOKIE] = cookie
    r.config_resetstat()
    response = client.get("/get/")
    assert response.status_code == 200 and response.json() == {}
    assert command_calls(r) == 1  # the GET, and nothing written
    assert r.dbsize() == 0
    assert response.cookies[COOKIE].value == ""  # Django's rule: the empty session's cookie goes
    assert client.get("/counter/").content == b"1"
    assert client.cookies[COOKIE].value != cookie  # a fresh key, never the forged one


def test_emptied_session_deletes_cookie(middleware: str, client: Client) -> None:
    client.get("/counter/")
    session = client.session
    session.flush()
    response = client.get("/get/")
    assert response.cookies[COOKIE].value == ""


def test_5xx_response_is_not_saved(middleware: str, client: Client) -> None:
    client.get("/counter/")
    assert client.get("/error/").status_code == 500
    assert "error" not in client.get("/get/").json()


@pytest.mark.plaintext_values
def test_save_every_request_refreshes_ttl_only(
    middleware: str, client: Client, r: redis.Redis
) -> None:
    client.get("/counter/")
    redis_key = b"session:" + codec.digest(client.cookies[COOKIE].value).encode()
    r.pexpire(redis_key, 10_000)
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        client.get("/get/")
    assert r.pttl(redis_key) > 10_000
    assert r.get(redis_key) == b'j1:1:{"visits":1}'


def test_test_client_session_and_force_login(middleware: str, client: Client, user: User) -> None:
    session = client.session
    session["visits"] = 41
    session.save()
    assert client.get("/counter/").content == b"42"
    client.force_login(user)
    assert client.get("/whoami/").content == b"ada"


def test_messages_survive_the_redirect(middleware: str, client: Client) -> None:
    with override_settings(
        MESSAGE_STORAGE="django.contrib.messages.storage.session.SessionStorage"
    ):
        client.post("/messages/")
        assert client.get("/messages/").content == b"saved!"
        assert client.get("/messages/").content == b""


@pytest.mark.plaintext_values
def test_csrf_secret_kept_in_session(middleware: str, r: redis.Redis) -> None:
    client = Client(enforce_csrf_checks=True)
    with override_settings(CSRF_USE_SESSIONS=True):
        assert client.post("/messages/").status_code == 403
        token = client.get("/csrf-token/").content.decode()
        assert COOKIE in client.cookies and "csrftoken" not in client.cookies
        assert b"_csrftoken" in bytes(r.get(session_keys(r)[0]))  # type: ignore[arg-type]
        assert client.post("/messages/", HTTP_X_CSRFTOKEN=token).status_code == 200


def test_async_views(middleware: str) -> None:
    async def visit() -> list[bytes]:
        client = AsyncClient()
        return [(await client.get("/acounter/")).content for _ in range(3)]

    assert async_to_sync(visit)() == [b"1", b"2", b"3"]


@pytest.mark.skipif(django.VERSION < (5, 0), reason="alogin/alogout/auser arrived in Django 5.0")
def test_async_login_logout(middleware: str, user: User, r: redis.Redis) -> None:
    async def flow() -> None:
        client = AsyncClient()
        await client.get("/acounter/")
        before = client.cookies[COOKIE].value
        await client.get("/alogin/?username=ada")
        assert client.cookies[COOKIE].value != before
        assert (await client.get("/awhoami/")).content == b"ada"
        await client.get("/alogout/")
        assert (await client.get("/awhoami/")).content == b"anonymous"

    async_to_sync(flow)()
    assert session_keys(r) == []


def test_response_without_a_session_passes_through(middleware: str) -> None:
    from django.http import HttpResponse
    from django.test import RequestFactory

    from django_redis_sessions.middleware import SessionMiddleware

    request = RequestFactory().get("/")
    response = HttpResponse("x")
    assert SessionMiddleware(lambda r: response).process_response(request, response) is response

    async def passthrough(request: object) -> HttpResponse:
        return response

    async def call() -> object:
        return await SessionMiddleware(passthrough).aprocess_response(request, response)

    assert async_to_sync(call)() is response


def test_browser_close_cookie(middleware: str, client: Client) -> None:
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
        response = client.get("/counter/")
    assert response.cookies[COOKIE]["max-age"] == ""
    assert response.cookies[COOKIE]["expires"] == ""


def test_untouched_session_does_not_vary(middleware: str, client: Client) -> None:
    client.get("/counter/")
    response = client.get("/plain/")
    assert not response.has_header("Vary")
    assert COOKIE not in response.cookies


def test_other_exceptions_are_not_ours(middleware: str, client: Client) -> None:
    client.raise_request_exception = False
    assert client.get("/boom/").status_code == 500


def test_async_browser_close_and_5xx(middleware: str) -> None:
    async def flow() -> tuple[str, int]:
        client = AsyncClient()
        with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
            response = await client.get("/acounter/")
        return response.cookies[COOKIE]["max-age"], (await client.get("/acounter/")).status_code

    assert async_to_sync(flow)() == ("", 200)
