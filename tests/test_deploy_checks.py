"""``manage.py check --deploy``: each trap has its warning, and a safe setup has none."""

from __future__ import annotations

import ssl
from io import StringIO
from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_redis_sessions import checks as our_checks

ENGINE = "django_redis_sessions.session"
OURS_MW = "django_redis_sessions.middleware.SessionMiddleware"
AUTH_MW = "django.contrib.auth.middleware.AuthenticationMiddleware"
DJANGO_MW = "django.contrib.sessions.middleware.SessionMiddleware"
SAFE = {"url": "rediss://sessions.internal:6380/0", "options": {"ssl_ca_certs": "/ca.pem"}}


def deploy_ids(**overrides: Any) -> list[str]:
    """The ids of our deploy warnings under these settings."""
    with override_settings(**overrides):
        messages = checks.run_checks(include_deployment_checks=True)
    return sorted(m.id for m in messages if m.id and m.id.startswith("django_redis_sessions.W1"))


def test_a_safe_deployment_has_no_warning() -> None:
    assert deploy_ids(SESSION_REDIS=SAFE, MIDDLEWARE=[OURS_MW, AUTH_MW]) == []


def test_deploy_checks_run_only_with_deploy() -> None:
    with override_settings(SESSION_REDIS={"url": "redis://10.0.0.5:6379/0"}):
        plain = [m.id for m in checks.run_checks()]
    assert "django_redis_sessions.W101" not in plain
    assert deploy_ids(SESSION_REDIS={"url": "redis://10.0.0.5:6379/0"}) == [
        "django_redis_sessions.W101"
    ]


def test_other_engines_get_no_warning() -> None:
    assert (
        deploy_ids(
            SESSION_ENGINE="django.contrib.sessions.backends.db",
            SESSION_REDIS={"url": "redis://10.0.0.5:6379/0", "on_unavailable": "anonymous"},
            MIDDLEWARE=[DJANGO_MW, AUTH_MW],
        )
        == []
    )


@pytest.mark.parametrize(
    ("session_redis", "warned"),
    [
        ({"url": "redis://10.0.0.5:6379/0"}, True),
        ({"url": "redis://:secret@redis.internal/2"}, True),
        ({"url": "redis://127.0.0.1:6379/0"}, False),
        ({"url": "redis://localhost/0"}, False),
        ({"url": "redis://[::1]:6379/0"}, False),
        ({"url": "rediss://10.0.0.5:6380/0"}, False),
        ({"url": "unix:///run/redis.sock"}, False),
        ({"cluster": True, "startup_nodes": [("127.0.0.1", 7000), ("10.0.0.2", 7000)]}, True),
        ({"cluster": True, "url": "rediss://10.0.0.1:7000", "wait_replicas": 1}, False),
        ({"sentinels": [("10.0.0.1", 26379)], "service_name": "m", "wait_replicas": 1}, True),
        (
            {
                "sentinels": [("10.0.0.1", 26379)],
                "service_name": "m",
                "url": "rediss://:pw@/0",
                "wait_replicas": 1,
            },
            False,
        ),
        # The project's own client: its address is not in the settings.
        ({"url": "redis://10.0.0.5:6379/0", "client": "tests.views.anything"}, False),
    ],
)
def test_plain_text_to_another_host(session_redis: dict[str, Any], warned: bool) -> None:
    with override_settings(SESSION_REDIS=session_redis):
        messages = our_checks.check_plain_text_transport()
    assert [m.id for m in messages] == (["django_redis_sessions.W101"] if warned else [])
    if warned:
        assert "unencrypted" in messages[0].msg and "rediss://" in str(messages[0].hint)


@pytest.mark.parametrize(
    ("session_redis", "warned"),
    [
        ({"sentinels": [("127.0.0.1", 26379)], "service_name": "m"}, True),
        ({"sentinels": [("127.0.0.1", 26379)], "service_name": "m", "wait_replicas": 1}, False),
        ({"cluster": True, "url": "redis://127.0.0.1:7000"}, True),
        ({"cluster": True, "url": "redis://127.0.0.1:7000", "wait_replicas": 2}, False),
        ({"url": "redis://127.0.0.1:6379/0"}, False),
    ],
)
def test_replicated_topology_without_wait(session_redis: dict[str, Any], warned: bool) -> None:
    with override_settings(SESSION_REDIS=session_redis):
        messages = our_checks.check_replicated_writes()
    assert [m.id for m in messages] == (["django_redis_sessions.W102"] if warned else [])
    if warned:
        assert "failover" in messages[0].msg and "wait_replicas" in str(messages[0].hint)


@pytest.mark.parametrize(
    ("policy", "middleware", "warned"),
    [
        ("anonymous", [OURS_MW, AUTH_MW], True),
        ("anonymous", [OURS_MW], False),
        ("error", [OURS_MW, AUTH_MW], False),
    ],
)
def test_anonymous_on_outage_with_logins(policy: str, middleware: list[str], warned: bool) -> None:
    with override_settings(
        SESSION_REDIS={"url": "redis://127.0.0.1/0", "on_unavailable": policy},
        MIDDLEWARE=middleware,
    ):
        messages = our_checks.check_anonymous_on_outage()
    assert [m.id for m in messages] == (["django_redis_sessions.W103"] if warned else [])


def cache(location: Any, **extra: Any) -> dict[str, Any]:
    return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": location, **extra}


@pytest.mark.parametrize(
    ("session_redis", "caches", "expected"),
    [
        # Same server and database, however spelt: clear() is FLUSHDB.
        ({"url": "redis://localhost:6379/0"}, {"default": cache("redis://127.0.0.1")}, "W105"),
        ({"url": "redis://127.0.0.1/0"}, {"default": cache(["redis://127.0.0.1:6379/0"])}, "W105"),
        ({"url": "redis://r1/0"}, {"default": cache("redis://r1/1,redis://r1/0")}, "W105"),
        ({"url": "unix:///run/r.sock?db=2"}, {"c": cache("unix:///run/r.sock?db=2")}, "W105"),
        (
            {"cluster": True, "startup_nodes": [("10.0.0.1", 7000)], "wait_replicas": 1},
            {"default": cache("redis://10.0.0.1:7000/0")},
            "W105",
        ),
        # Overlapping key prefixes on top of that.
        ({"url": "redis://r1/0"}, {"default": cache("redis://r1/0", KEY_PREFIX="session")}, "W104"),
        ({"url": "redis://r1/0", "prefix": ""}, {"default": cache("redis://r1/0")}, "W104"),
        # A custom key function: the overlap cannot be judged, the FLUSHDB trap stays.
        (
            {"url": "redis://r1/0", "prefix": ""},
            {"default": cache("redis://r1/0", KEY_FUNCTION="x.y")},
            "W105",
        ),
        # Elsewhere: another database, server or port, or no Redis at all.
        ({"url": "redis://r1/0"}, {"default": cache("redis://r1/1")}, None),
        ({"url": "redis://r1/0"}, {"default": cache("redis://r1:6380/0")}, None),
        ({"url": "redis://r1/0"}, {"default": cache("redis://r2/0")}, None),
        ({"url": "redis://r1/0"}, {"default": cache("redis://r1:bad/0")}, None),
        (
            {"url": "redis://r1/0"},
            {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            None,
        ),
        (
            {"url": "redis://127.0.0.1/0"},
            {
                "m": {
                    "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                    "LOCATION": "127.0.0.1:6379",
                }
            },
            None,
        ),
        (
            {"sentinels": [("r1", 26379)], "service_name": "m", "wait_replicas": 1},
            {"default": cache("redis://r1/0")},
            None,
        ),
    ],
)
def test_cache_sharing_the_sessions_database(
    session_redis: dict[str, Any], caches: dict[str, Any], expected: str | None
) -> None:
    with override_settings(SESSION_REDIS=session_redis, CACHES=caches):
        messages = our_checks.check_shared_with_cache()
    assert [m.id for m in messages] == ([f"django_redis_sessions.{expected}"] if expected else [])
    if messages:
        assert repr(next(iter(caches))).strip("'") in messages[0].msg


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        ({"socket_timeout": None}, True),
        ({"socket_connect_timeout": None, "socket_timeout": 3}, True),
        ({"socket_timeout": 3}, False),
        ({}, False),
    ],
)
def test_unbounded_socket_timeouts(options: dict[str, Any], warned: bool) -> None:
    with override_settings(SESSION_REDIS={"url": "redis://127.0.0.1/0", "options": options}):
        messages = our_checks.check_timeouts()
    assert [m.id for m in messages] == (["django_redis_sessions.W106"] if warned else [])


@pytest.mark.parametrize(
    ("url", "options", "warned"),
    [
        ("rediss://r1/0", {"ssl_cert_reqs": "none"}, True),
        ("rediss://r1/0", {"ssl_cert_reqs": ssl.CERT_NONE}, True),
        ("rediss://r1/0?ssl_cert_reqs=none", {}, True),
        ("rediss://r1/0", {"ssl_check_hostname": False}, True),
        ("rediss://r1/0", {"ssl_cert_reqs": "required", "ssl_ca_certs": "/ca.pem"}, False),
        ("rediss://r1/0", {}, False),
    ],
)
def test_tls_without_verification(url: str, options: dict[str, Any], warned: bool) -> None:
    with override_settings(SESSION_REDIS={"url": url, "options": options}):
        messages = our_checks.check_tls_verification()
    assert [m.id for m in messages] == (["django_redis_sessions.W107"] if warned else [])


@pytest.mark.parametrize(
    ("engine", "middleware", "warned"),
    [
        (ENGINE, [DJANGO_MW, AUTH_MW], True),
        (ENGINE, [OURS_MW, AUTH_MW], False),
        ("django.contrib.sessions.backends.db", [DJANGO_MW], False),
    ],
)
def test_djangos_session_middleware(engine: str, middleware: list[str], warned: bool) -> None:
    with override_settings(SESSION_ENGINE=engine, MIDDLEWARE=middleware):
        messages = our_checks.check_middleware()
    assert [m.id for m in messages] == (["django_redis_sessions.W108"] if warned else [])


def test_every_deploy_warning_has_an_id_and_a_hint() -> None:
    ids = deploy_ids(
        SESSION_REDIS={
            "cluster": True,
            "url": "redis://10.0.0.1:7000",
            "on_unavailable": "anonymous",
            "options": {"socket_timeout": None, "ssl_check_hostname": False},
        },
        MIDDLEWARE=[DJANGO_MW, AUTH_MW],
        CACHES={"default": cache("redis://10.0.0.1:7000/0")},
    )
    assert ids == [f"django_redis_sessions.W10{n}" for n in (1, 2, 3, 5, 6, 7, 8)], ids
    with override_settings(SESSION_REDIS={"url": "redis://10.0.0.5/0", "prefix": ""}):
        messages = checks.run_checks(include_deployment_checks=True)
    for message in messages:
        if message.id and message.id.startswith("django_redis_sessions.W1"):
            assert message.hint and message.level == checks.WARNING


def test_manage_py_check_deploy_reports_them() -> None:
    out = StringIO()
    with override_settings(SESSION_REDIS={"url": "redis://10.0.0.5:6379/0"}):
        call_command("check", "--deploy", stdout=out, stderr=out)
        with pytest.raises(SystemCheckError, match="W101"):
            call_command("check", "--deploy", "--fail-level", "WARNING", stdout=out, stderr=out)
    assert "django_redis_sessions.W101" in out.getvalue()
