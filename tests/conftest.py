"""A real redis-server for the whole run, and a clean database for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from django_redis_sessions import conf, connection
from testproject.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` from the environment, else a redis-server of our own on loopback."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session", autouse=True)
def _session_redis(redis_url: str) -> Iterator[None]:
    settings.SESSION_REDIS = {"url": redis_url}
    conf.get_config.cache_clear()
    connection.reset()
    yield
    connection.reset()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A raw client on the test database, for looking behind the engine's back."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_redis(r: redis.Redis) -> Iterator[None]:
    r.flushdb()
    yield
    conf.get_config.cache_clear()


def session_redis(**overrides: Any) -> dict[str, Any]:
    """The suite's SESSION_REDIS with some keys changed, for override_settings."""
    return {**settings.SESSION_REDIS, **overrides}
