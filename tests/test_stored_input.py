"""Anything read from Redis is input: a value the engine cannot read is never a 500.

The scripts' header check and codec's are one rule (``scripts.HEADER_LUA`` is
built from codec's constants): a value the scripts accept is one codec reads,
so a save never meets a header it cannot split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.sessions.backends.base import UpdateError
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client
from django.urls import include, path

from django_redis_sessions import codec, conf, scripts
from django_redis_sessions.session import SessionStore
from tests.twins import Ops, new_session

# Accepted by the scripts' old pattern ('^[jze]1:(%d+):'), refused by codec.
BAD_HEADER = b"j1:01:{}"
# The raw client of the test, for the views to plant a value with.
planting: dict[str, Any] = {}


def _plant(request: HttpRequest) -> None:
    key = request.session.session_key
    assert key is not None
    planting["r"].set(codec.redis_key(conf.get_config().prefix, key), BAD_HEADER, keepttl=True)


def plant_then_save(request: HttpRequest) -> HttpResponse:
    """Loads the session; another writer plants a bad header; then this request saves."""
    visits = request.session.get("visits", 0)
    _plant(request)
    request.session["visits"] = visits + 1
    return HttpResponse("ok")


async def aplant_then_save(request: HttpRequest) -> HttpResponse:
    visits = await request.session.aget("visits", 0)
    _plant(request)
    await request.session.aset("visits", visits + 1)
    return HttpResponse("ok")


urlpatterns = [
    path("plant/", plant_then_save),
    path("aplant/", aplant_then_save),
    path("", include("tests.urls")),
]


@pytest.fixture
def site(settings: Any, r: Any) -> Iterator[None]:
    settings.ROOT_URLCONF = __name__
    planting["r"] = r
    yield
    planting.clear()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_header_planted_between_load_and_save_is_no_500(
    site: None, middleware: str, mode: str, r: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client: Any = AsyncClient() if mode == "async" else Client()

    def get(url: str) -> Any:
        from asgiref.sync import async_to_sync

        return async_to_sync(client.get)(url) if mode == "async" else client.get(url)

    assert get("/counter/").content == b"1"
    (key,) = r.keys("session:*")
    response = get("/aplant/" if mode == "async" else "/plant/")
    # The value is not one of ours: never overwritten; to this request its
    # session is gone, as after a concurrent logout (SessionInterrupted).
    assert response.status_code == 400
    assert r.get(key) == BAD_HEADER
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        assert get("/counter/").content == b"1"  # the next request starts afresh
    assert "Session data corrupted" in caplog.text
    assert r.get(key) == BAD_HEADER


def test_a_planted_header_makes_save_report_the_session_gone(ops: Ops, r: Any) -> None:
    store = new_session(ops, a=1)
    key = codec.redis_key("session:", store.session_key or "")
    ops.setitem(store, "b", 2)
    r.set(key, BAD_HEADER, keepttl=True)
    with pytest.raises(UpdateError):
        ops.save(store)
    assert r.get(key) == BAD_HEADER


DIGITS = 16  # codec.VERSION_DIGITS
HEADERS = [
    b"j1:1:{}",
    b"z1:42:x",
    b"e1:" + b"9" * DIGITS + b":x",
    b"j1:" + b"1" * (DIGITS + 1) + b":{}",
    b"j1:" + b"1" * 30 + b":{}",
    BAD_HEADER,
    b"j1:0:{}",
    b"j1:-1:{}",
    b"j1: 1:{}",
    b"j1:1{}",
    b"j1:1",
    b"x1:1:{}",
    b"J1:1:{}",
    b"j2:1:{}",
    b"",
]


@pytest.mark.parametrize("value", HEADERS)
def test_the_scripts_accept_exactly_the_headers_codec_reads(value: bytes, r: Any) -> None:
    key = "session:" + "0" * 32
    r.set(key, value)
    # TOUCH answers 0 for "gone or not ours", else 1 or 2 (another version).
    accepted = r.eval(scripts.TOUCH.source, 1, key, "12345", 60_000) != 0
    try:
        codec.split(value)
        readable = True
    except codec.CorruptSession:
        readable = False
    assert accepted == readable


def test_split_refuses_what_is_not_a_string() -> None:
    with pytest.raises(codec.CorruptSession, match="not a stored value"):
        codec.split(2)  # type: ignore[arg-type]


@pytest.mark.plaintext_values
def test_a_corrupt_body_met_in_a_conflict_is_logged(
    ops: Ops, r: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = new_session(ops, a=1)
    key = codec.redis_key("session:", store.session_key or "")
    loaded = SessionStore(store.session_key)
    assert ops.getitem(loaded, "a") == 1
    r.set(key, b'j1:9:{"trunc', keepttl=True)
    ops.setitem(loaded, "b", 2)
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        ops.save(loaded)
    assert "Session data corrupted" in caplog.text
    assert r.get(key) == b'j1:10:{"b":2}'
