"""SESSION_REDIS: validation at startup, connection options, custom clients, fork safety."""

from __future__ import annotations

import os
from typing import Any

import pytest
import redis
import redis.asyncio
from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from redis.utils import HIREDIS_AVAILABLE

from django_redis_sessions import conf, connection, plan
from django_redis_sessions.session import SessionStore
from testproject.redis_server import RedisServer
from tests.conftest import session_redis
from tests.twins import Ops

# Set by the tests that use the custom client factories below.
CUSTOM_URL = ""


def decoding_client() -> redis.Redis:
    return redis.Redis.from_url(CUSTOM_URL, decode_responses=True)


def async_decoding_client() -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(CUSTOM_URL, decode_responses=True)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("redis://x", "SESSION_REDIS: must be a dict, got str"),
        ({"urll": "redis://x"}, "SESSION_REDIS: unknown key(s) 'urll'"),
        ({"url": 6379}, 'SESSION_REDIS["url"]: must be a string'),
        ({"url": "http://localhost"}, "SESSION_REDIS[\"url\"]: 'http://localhost' must start with"),
        ({"url": "redis://localhost:notaport/0"}, 'SESSION_REDIS["url"]: '),
        ({"url": "redis:///0"}, "SESSION_REDIS[\"url\"]: 'redis:///0' names no host"),
        ({"url": "unix://"}, "SESSION_REDIS[\"url\"]: 'unix://' names no socket path"),
        ({"prefix": 1}, 'SESSION_REDIS["prefix"]: must be a string'),
        ({"options": []}, 'SESSION_REDIS["options"]: must be a dict'),
        ({"on_unavailable": "ignore"}, 'SESSION_REDIS["on_unavailable"]: must be'),
        ({"max_bytes": 0}, 'SESSION_REDIS["max_bytes"]: must be a positive integer'),
        ({"max_bytes": True}, 'SESSION_REDIS["max_bytes"]: must be a positive integer'),
        ({"retry_after": "5"}, 'SESSION_REDIS["retry_after"]: must be a positive integer'),
        ({"compress_min_bytes": -1}, 'SESSION_REDIS["compress_min_bytes"]'),
        ({"max_conflict_retries": 0}, 'SESSION_REDIS["max_conflict_retries"]'),
        ({"client": "nodots"}, 'SESSION_REDIS["client"]: must be a dotted path'),
    ],
)
def test_bad_settings_name_the_key(value: Any, message: str) -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        plan.parse(value)  # the core's keys and each feature's
    assert str(caught.value).startswith(message)


def test_defaults() -> None:
    config = conf.parse(None)
    assert (config.url, config.prefix, config.on_unavailable) == (
        "redis://localhost:6379/0",
        "session:",
        "error",
    )
    assert conf.parse({}) == config


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"options": {"socket_timeout": 1, "bogus_option": 1}}, "bogus_option"),
        ({"client": "tests.nowhere.factory"}, 'SESSION_REDIS["client"]: cannot import'),
        ({"async_client": "tests.nowhere.factory"}, 'SESSION_REDIS["async_client"]: cannot'),
    ],
)
def test_bad_connection_settings_fail_at_startup(value: dict[str, Any], message: str) -> None:
    with override_settings(SESSION_REDIS=value), pytest.raises(ImproperlyConfigured) as caught:
        # What Django runs at startup (manage.py, gunicorn, uvicorn alike).
        apps.get_app_config("django_redis_sessions").ready()
    assert message in str(caught.value)


def test_good_settings_pass_startup() -> None:
    with override_settings(
        SESSION_REDIS={
            "url": "rediss://user:pw@example.invalid:6380/2",
            "options": {"ssl_cert_reqs": "none"},
        }
    ):
        apps.get_app_config("django_redis_sessions").ready()


def test_options_reach_the_pool_over_our_defaults() -> None:
    config = conf.parse({"options": {"socket_timeout": 7, "max_connections": 3}})
    options = connection.pool_options(config)
    assert options["socket_timeout"] == 7
    assert options["socket_connect_timeout"] == conf.DEFAULT_OPTIONS["socket_connect_timeout"]
    assert options["max_connections"] == 3
    assert options["retry"].get_retries() == conf.DEFAULT_RETRIES


def test_serializer_warning() -> None:
    from django_redis_sessions.checks import check_serializer

    with override_settings(SESSION_SERIALIZER="myapp.PickleSerializer"):
        (warning,) = check_serializer()
    assert warning.id == "django_redis_sessions.W001"
    assert warning.level == checks.WARNING
    assert check_serializer() == []


def test_one_client_per_process_shared_by_threads() -> None:
    import threading

    seen = []
    threads = [
        threading.Thread(target=lambda: seen.append(connection.get_client())) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in seen}) == 1


@pytest.mark.single_only
def test_hiredis_is_used_when_installed() -> None:
    assert HIREDIS_AVAILABLE
    client = connection.get_client()
    assert isinstance(client, redis.Redis)
    SessionStore().exists("a" * 32)
    pool_connection = client.connection_pool.get_connection()
    try:
        assert "Hiredis" in type(pool_connection._parser).__name__
    finally:
        client.connection_pool.release(pool_connection)


def test_client_survives_fork() -> None:
    store = SessionStore()
    store["parent"] = True
    store.save()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        try:
            child = SessionStore(store.session_key)
            child["child"] = True
            child.save()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert SessionStore(store.session_key).load() == {"parent": True, "child": True}
    # The parent's own connections still work after the child used its copies.
    assert SessionStore(store.session_key).exists(store.session_key) is True


def test_unix_socket_url(ops: Ops, tmp_path: Any) -> None:
    sock = tmp_path / "redis.sock"
    with (
        RedisServer(args=["--unixsocket", str(sock), "--unixsocketperm", "700"]),
        override_settings(SESSION_REDIS=session_redis(url=f"unix://{sock}?db=0")),
    ):
        store = SessionStore()
        ops.setitem(store, "via", "socket")
        ops.save(store)
        assert ops.getitem(SessionStore(store.session_key), "via") == "socket"


@pytest.mark.plaintext_values
@pytest.mark.single_only
def test_custom_clients_with_decoded_responses(ops: Ops, redis_url: str) -> None:
    global CUSTOM_URL
    CUSTOM_URL = redis_url
    with override_settings(
        SESSION_REDIS=session_redis(
            client="tests.test_settings.decoding_client",
            async_client="tests.test_settings.async_decoding_client",
        )
    ):
        store = SessionStore()
        ops.setitem(store, "name", "Zoë")
        ops.save(store)
        a, b = SessionStore(store.session_key), SessionStore(store.session_key)
        assert ops.getitem(a, "name") == "Zoë"
        ops.getitem(b, "name")
        ops.setitem(b, "b", 1)
        ops.save(b)
        ops.setitem(a, "a", 1)
        ops.save(a)  # a conflict: the script's reply arrives decoded, as str
        assert ops.items(SessionStore(store.session_key)) == {"name": "Zoë", "a": 1, "b": 1}
        assert isinstance(connection.get_client(), redis.Redis)


@pytest.mark.plaintext_values
@pytest.mark.single_only
def test_sync_client_only_serves_async_calls_from_a_thread(redis_url: str) -> None:
    global CUSTOM_URL
    CUSTOM_URL = redis_url
    from asgiref.sync import async_to_sync

    with override_settings(
        SESSION_REDIS=session_redis(client="tests.test_settings.decoding_client")
    ):
        store = SessionStore()
        async_to_sync(store.aset)("a", 1)
        async_to_sync(store.asave)()
        assert async_to_sync(SessionStore(store.session_key).aload)() == {"a": 1}


@pytest.mark.parametrize(
    "url",
    [
        "http://:hunter2secret@localhost:6379/0",
        "redis://admin:hunter2secret@:6379/0",
        "redis://:hunter2secret@localhost:99999/0",
        "unix://?password=hunter2secret",
        "redis://hunter2secret@/0",
        "redis://:hunter2secret@[::1/0",
    ],
)
def test_a_bad_url_is_named_without_its_password(url: str) -> None:
    with pytest.raises(ImproperlyConfigured) as failure:
        conf.parse({"url": url})
    message = str(failure.value)
    assert message.startswith('SESSION_REDIS["url"]: ')
    assert "hunter2" not in message and "secret" not in message


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"options": [("password", "hunter2secret")]}, "options"),
        ({"url": b"redis://:hunter2secret@host/0"}, "url"),
        (
            {
                "sentinels": [("h", 26379)],
                "service_name": "m",
                "sentinel_options": ["hunter2secret"],
            },
            "sentinel_options",
        ),
        (
            {
                "url": "redis://:hunter2secret@node:6379/0",
                "sentinels": [("h", 26379)],
                "service_name": "m",
            },
            "url",
        ),
        ({"url": "redis://:hunter2secret@node:6379/3", "cluster": True}, "url"),
    ],
)
def test_settings_that_may_hold_a_password_are_never_printed(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ImproperlyConfigured) as failure:
        conf.parse(raw)
    message = str(failure.value)
    assert message.startswith(f'SESSION_REDIS["{key}"]: ')
    assert "hunter2" not in message
