"""The failure policy, proven by breaking real redis-server processes.

Every server here is started by the test on a free loopback port, persists with
an fsync'd append-only file (so a restart keeps what was acknowledged), and is
stopped at the end. Every loop is bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import Client, override_settings

from django_redis_sessions import SessionTooLarge, SessionUnavailable, codec, scripts, signals
from django_redis_sessions.connection import server_of
from django_redis_sessions.session import SessionStore
from testproject.redis_server import RedisServer, RedisServerError
from tests.conftest import session_redis
from tests.twins import Ops

COOKIE = settings.SESSION_COOKIE_NAME
PERSISTENT = ["--appendonly", "yes", "--appendfsync", "always"]
# Default timeouts (1 s) and retries (2, backoff capped at 0.2 s) bound one command.
COMMAND_BOUND_S = 3 * 1.0 + 2 * 0.2


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer(args=PERSISTENT) as srv:
        yield srv


@pytest.fixture
def on(server: RedisServer) -> Iterator[RedisServer]:
    """Point the engine at ``server`` for this test."""
    with override_settings(SESSION_REDIS=session_redis(url=server.url)):
        yield server


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()


@pytest.fixture
def events() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def receiver(signal: Any, sender: Any, **kwargs: Any) -> None:
        seen.append((kwargs["operation"], kwargs))

    signals.store_unavailable.connect(receiver)
    yield seen
    signals.store_unavailable.disconnect(receiver)


def visit(client: Client, url: str = "/counter/") -> Any:
    return client.get(url)


def logged_in_client(user_visits: int = 2) -> Client:
    client = Client()
    for _ in range(user_visits):
        assert visit(client).status_code == 200
    return client


# Missing is not unavailable -------------------------------------------------------


def test_down_redis_raises_instead_of_loading_empty(
    ops: Ops, on: RedisServer, events: list[Any]
) -> None:
    store = SessionStore()
    ops.setitem(store, "user", "ada")
    ops.save(store)
    on.stop()
    fresh = SessionStore(store.session_key)
    with pytest.raises(SessionUnavailable) as caught:
        ops.load(fresh)
    assert isinstance(caught.value.__cause__, redis.ConnectionError)
    assert fresh.session_key == store.session_key  # the key is kept, not dropped
    assert [operation for operation, _ in events] == ["load"]
    assert events[0][1]["digest"] == codec.digest(store.session_key or "")


def test_known_outage_is_not_waited_on_twice(ops: Ops, on: RedisServer, events: list[Any]) -> None:
    store = SessionStore()
    ops.save(store)
    on.freeze()
    try:
        fresh = SessionStore(store.session_key)
        with pytest.raises(SessionUnavailable):
            ops.load(fresh)
        started = time.monotonic()
        with pytest.raises(SessionUnavailable):
            ops.load(fresh)  # error pages read request.user too: no second wait
        assert time.monotonic() - started < 0.5
    finally:
        on.thaw()
    assert len(events) == 1


@pytest.mark.parametrize("method", ["save", "create", "delete", "exists"])
def test_every_operation_reports_unavailable(ops: Ops, on: RedisServer, method: str) -> None:
    store = SessionStore()
    ops.save(store)
    on.stop()
    store = SessionStore(store.session_key)
    store._session_cache = {"a": 1}
    args = (store.session_key,) if method == "exists" else ()
    with pytest.raises(SessionUnavailable):
        getattr(ops, method)(store, *args)


def test_failure_is_logged_once_with_the_digest(
    on: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = logged_in_client()
    key = client.cookies[COOKIE].value
    on.stop()
    with caplog.at_level(logging.ERROR, "django_redis_sessions"):
        assert visit(client).status_code == 503
    records = [r for r in caplog.records if r.name == "django_redis_sessions"]
    assert len(records) == 1
    assert codec.digest(key) in records[0].getMessage()
    assert key not in caplog.text


# Through the middleware: 503, the cookie kept, recovery ---------------------------


def test_outage_is_503_and_keeps_the_cookie(on: RedisServer) -> None:
    client = logged_in_client()
    key = client.cookies[COOKIE].value
    on.stop()
    response = visit(client)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert COOKIE not in response.cookies  # neither deleted nor replaced
    on.start()
    assert visit(client).content == b"3"
    assert client.cookies[COOKIE].value == key


def test_outage_during_save_is_503(on: RedisServer) -> None:
    on.stop()
    # No cookie, so nothing to load: the failure meets the middleware's save.
    response = Client().get("/set/a/b/")
    assert response.status_code == 503
    assert COOKIE not in response.cookies


def test_anonymous_mode_serves_an_empty_read_only_session(on: RedisServer) -> None:
    with override_settings(SESSION_REDIS=session_redis(url=on.url, on_unavailable="anonymous")):
        client = logged_in_client()
        key = client.cookies[COOKIE].value
        on.stop()
        response = visit(client)
        assert response.status_code == 200
        assert response.content == b"1"  # an empty session, not the user's
        assert response.cookies[COOKIE].value == key  # the same key, kept
        on.start()
        assert visit(client).content == b"3"  # nothing was saved during the outage


def test_stop_and_restart_during_a_request_loop(on: RedisServer) -> None:
    client = logged_in_client(1)
    key = client.cookies[COOKIE].value
    acknowledged = 1
    statuses = []
    for n in range(30):
        if n == 10:
            on.stop()
        if n == 20:
            on.start()
        response = visit(client)
        statuses.append(response.status_code)
        if response.status_code == 200:
            acknowledged += 1
            assert response.content == str(acknowledged).encode()
    assert statuses == [200] * 10 + [503] * 10 + [200] * 10
    assert client.cookies[COOKIE].value == key


def test_frozen_redis_fails_within_the_bound_then_recovers(on: RedisServer) -> None:
    client = logged_in_client()
    on.freeze()
    try:
        started = time.monotonic()
        response = visit(client)
        elapsed = time.monotonic() - started
    finally:
        on.thaw()
    assert response.status_code == 503
    assert elapsed < COMMAND_BOUND_S + 1.0
    assert visit(client).content == b"3"


def test_killed_connections_are_replaced_transparently(on: RedisServer, raw: redis.Redis) -> None:
    client = logged_in_client(1)
    for n in range(2, 12):
        raw.client_kill_filter(_type="normal", skipme=True)
        response = visit(client)
        assert response.status_code == 200, response.content
        assert response.content == str(n).encode()


def test_script_flush_is_reloaded_transparently(server: RedisServer, raw: redis.Redis) -> None:
    # With idle_timeout every load is a script, also where saves are native (IFEQ).
    with override_settings(SESSION_REDIS=session_redis(url=server.url, idle_timeout=3600)):
        client = logged_in_client(1)
        for n in range(2, 8):
            raw.script_flush()
            assert visit(client).content == str(n).encode()
    ran = [scripts.LOAD.sha]
    if not server_of(raw.info("server")).has_ifeq:
        ran.append(scripts.SAVE.sha)
    assert raw.script_exists(*ran) == [True] * len(ran)


def test_out_of_memory_is_unavailable_and_keeps_data(on: RedisServer, raw: redis.Redis) -> None:
    client = logged_in_client()
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", "1")  # every write now fails with OOM
    try:
        response = client.get("/set/big/" + "x" * 100 + "/")
        assert response.status_code == 503
    finally:
        raw.config_set("maxmemory", "0")
    assert visit(client).content == b"3"


def test_read_only_replica_is_unavailable_for_writes(server: RedisServer) -> None:
    with RedisServer(args=["--replicaof", "127.0.0.1", str(server.port)]) as replica:
        primary = Client()
        with override_settings(SESSION_REDIS=session_redis(url=server.url)):
            assert visit(primary).content == b"1"
        with override_settings(SESSION_REDIS=session_redis(url=replica.url)):
            deadline = time.monotonic() + 10
            while redis.Redis.from_url(replica.url).dbsize() < 1:
                assert time.monotonic() < deadline, "replica never synced"
                time.sleep(0.05)
            with pytest.raises(SessionUnavailable, match=r"READONLY|read only"):
                store = SessionStore(primary.cookies[COOKIE].value)
                store["visits"] = 99
                store.save()


def test_wrong_password_is_unavailable(ops: Ops, on: RedisServer, raw: redis.Redis) -> None:
    raw.config_set("requirepass", "secret")
    try:
        with (
            override_settings(
                SESSION_REDIS=session_redis(url=f"redis://:wrong@127.0.0.1:{on.port}/0")
            ),
            pytest.raises(SessionUnavailable),
        ):
            ops.save(SessionStore())
        with override_settings(
            SESSION_REDIS=session_redis(url=f"redis://:secret@127.0.0.1:{on.port}/0")
        ):
            ops.save(SessionStore())
    finally:
        redis.Redis(port=on.port, password="secret").config_set("requirepass", "")


# The least-privilege ACL user documented in docs/failure.rst -----------------------

ACL_RULES = [
    "on", ">s3cret", "resetkeys", "~session:*", "resetchannels", "-@all",
    "+get", "+getrange", "+set", "+del", "+exists", "+evalsha", "+eval", "+pexpire",
    "+ping", "+hello", "+wait", "+info",
]  # fmt: skip


def test_acl_user_limited_to_the_prefix(ops: Ops, on: RedisServer, raw: redis.Redis) -> None:
    raw.acl_setuser("sessions", reset=True)
    raw.execute_command("ACL", "SETUSER", "sessions", *ACL_RULES)
    url = f"redis://sessions:s3cret@127.0.0.1:{on.port}/0"
    with override_settings(SESSION_REDIS=session_redis(url=url)):
        store = SessionStore()
        ops.setitem(store, "a", 1)
        ops.save(store)
        loaded = SessionStore(store.session_key)
        assert ops.getitem(loaded, "a") == 1
        ops.setitem(loaded, "b", 2)
        ops.save(loaded)
        ops.save(SessionStore(store.session_key))  # unchanged: the expiry refresh
        ops.cycle_key(loaded)
        ops.save(loaded)
        assert ops.exists(SessionStore(), loaded.session_key) is True
        ops.delete(loaded)
    # Outside the prefix, the same user is refused: a NOPERM is reported, not hidden.
    with (
        override_settings(SESSION_REDIS=session_redis(url=url, prefix="other:")),
        pytest.raises(SessionUnavailable, match="NoPermissionError"),
    ):
        ops.save(SessionStore())


# TLS ------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    server = RedisServer(tls=(str(cert_file), str(key_file), str(ca_file)))
    try:
        server.start()
    except RedisServerError as exc:
        server.close()
        pytest.skip(f"this redis-server cannot serve TLS: {exc}")
    yield server, ca_file
    server.close()


def test_tls(ops: Ops, tls_server: tuple[RedisServer, Path]) -> None:
    server, ca_file = tls_server
    url = server.url
    assert url.startswith("rediss://")
    with override_settings(
        SESSION_REDIS=session_redis(url=url, options={"ssl_ca_certs": str(ca_file)})
    ):
        store = SessionStore()
        ops.setitem(store, "secure", True)
        ops.save(store)
        assert ops.getitem(SessionStore(store.session_key), "secure") is True
    # Without the CA the certificate is refused: unavailable, not empty.
    with override_settings(SESSION_REDIS=session_redis(url=url)), pytest.raises(SessionUnavailable):
        ops.load(SessionStore(store.session_key))


# Size limit ----------------------------------------------------------------------------


def test_max_bytes_refuses_and_keeps_the_stored_session(ops: Ops, r: redis.Redis) -> None:
    with override_settings(SESSION_REDIS=session_redis(max_bytes=100)):
        store = SessionStore()
        ops.setitem(store, "a", "small")
        ops.save(store)
        loaded = SessionStore(store.session_key)
        ops.setitem(loaded, "big", "x" * 200)
        with pytest.raises(SessionTooLarge, match="max_bytes"):
            ops.save(loaded)
        assert ops.items(SessionStore(store.session_key)) == {"a": "small"}
        too_big = SessionStore()
        ops.setitem(too_big, "big", "x" * 200)
        with pytest.raises(SessionTooLarge):
            ops.save(too_big)
    assert r.dbsize() == 1


# Signals for metrics ------------------------------------------------------------------


def test_operation_timings_are_signalled(ops: Ops) -> None:
    timings: list[tuple[str, bool, float]] = []

    def receiver(sender: Any, operation: str, ok: bool, duration: float, **kw: Any) -> None:
        timings.append((operation, ok, duration))

    signals.operation_completed.connect(receiver)
    try:
        store = SessionStore()
        ops.setitem(store, "a", 1)
        ops.save(store)
        ops.exists(store, store.session_key)
    finally:
        signals.operation_completed.disconnect(receiver)
    assert [(op, ok) for op, ok, _ in timings] == [("save", True), ("exists", True)]
    assert all(0 < duration < 5 for _, _, duration in timings)


def test_async_outage_is_503_and_keeps_the_cookie(on: RedisServer) -> None:
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    async def flow() -> None:
        client = AsyncClient()
        assert (await client.get("/acounter/")).content == b"1"
        key = client.cookies[COOKIE].value
        on.stop()
        response = await client.get("/acounter/")
        assert response.status_code == 503
        assert COOKIE not in response.cookies
        # A new visitor has nothing to load: the outage meets the middleware's asave().
        response = await AsyncClient().get("/aset/a/b/")
        assert response.status_code == 503
        assert COOKIE not in response.cookies
        on.start()
        assert (await client.get("/acounter/")).content == b"2"
        assert client.cookies[COOKIE].value == key

    async_to_sync(flow)()


def test_outage_behind_a_handled_error_keeps_the_response(on: RedisServer) -> None:
    from django.http import HttpResponse
    from django.test import RequestFactory

    from django_redis_sessions.middleware import SessionMiddleware

    request = RequestFactory().get("/")
    request.COOKIES[COOKIE] = "a" * 32
    on.stop()

    def view(request: Any) -> HttpResponse:
        try:
            request.session.load()
        except SessionUnavailable:
            return HttpResponse("try later", status=429)
        return HttpResponse("ok")  # pragma: no cover

    response = SessionMiddleware(view)(request)
    assert (response.status_code, response.content) == (429, b"try later")


def test_acl_refusal_inside_a_script_is_reported(
    ops: Ops, on: RedisServer, raw: redis.Redis
) -> None:
    # Without +info the engine takes the scripts, even where the server has IFEQ.
    rules = [rule for rule in ACL_RULES if rule not in ("+getrange", "+info")]
    raw.execute_command("ACL", "SETUSER", "nogetrange", *rules)
    url = f"redis://nogetrange:s3cret@127.0.0.1:{on.port}/0"
    with override_settings(SESSION_REDIS=session_redis(url=url)):
        store = SessionStore()
        ops.setitem(store, "a", 1)
        ops.save(store)
        loaded = SessionStore(store.session_key)
        ops.setitem(loaded, "b", 2)
        # Redis: "... can't run this command"; Valkey: "... has no permissions to run".
        refused = r"can.t run this command|has no permissions to run the 'getrange'"
        with pytest.raises(SessionUnavailable, match=refused):
            ops.save(loaded)
