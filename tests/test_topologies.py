"""Sentinel and Cluster: settings, clients, WAIT, key spread and cycle_key across slots.

The Sentinel group and the Cluster here are real (tests/topology.py). With
``--redis-topology=sentinel`` or ``cluster`` the suite's own is reused;
otherwise this module starts its own, once.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.crc
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured

from django_redis_sessions import codec, conf, connection, driver, scripts, userindex
from django_redis_sessions.exceptions import SessionUnavailable
from django_redis_sessions.session import SessionStore
from testproject.redis_server import RedisServer, free_port
from tests.topology import (
    HOST,
    Cluster,
    SentinelGroup,
    client_for,
    replica_in_sync,
    wait_for,
)

MODES = ("sync", "async")


@pytest.fixture(scope="module")
def sentinel_group(redis_deployment: Any) -> Iterator[SentinelGroup]:
    if isinstance(redis_deployment.servers, SentinelGroup):
        yield redis_deployment.servers
        return
    with SentinelGroup() as group:
        yield group


@pytest.fixture(scope="module")
def cluster(redis_deployment: Any) -> Iterator[Cluster]:
    if isinstance(redis_deployment.servers, Cluster):
        yield redis_deployment.servers
        return
    with Cluster() as started:
        yield started


@pytest.fixture
def on_sentinel(sentinel_group: SentinelGroup, settings: Any) -> Iterator[SentinelGroup]:
    """SESSION_REDIS points at the Sentinel group, emptied first."""
    client = sentinel_group.client()
    client.flushdb()
    settings.SESSION_REDIS = sentinel_group.settings()
    yield sentinel_group
    client.close()


@pytest.fixture
def on_cluster(cluster: Cluster, settings: Any) -> Iterator[Cluster]:
    """SESSION_REDIS points at the Cluster, emptied first."""
    client = cluster.client()
    client.flushdb()
    settings.SESSION_REDIS = cluster.settings()
    yield cluster
    client.close()


def use(settings: Any, **overrides: Any) -> None:
    settings.SESSION_REDIS = {**settings.SESSION_REDIS, **overrides}


def roundtrip(mode: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Create a session with ``data`` and read it back with a new store."""

    async def run_async() -> tuple[str, dict[str, Any]]:
        store = SessionStore()
        for key, value in data.items():
            await store.aset(key, value)
        await store.asave()
        assert store.session_key is not None
        return store.session_key, await SessionStore(store.session_key).aload()

    if mode == "async":
        return asyncio.run(run_async())
    store = SessionStore()
    store.update(data)
    store.save()
    assert store.session_key is not None
    return store.session_key, SessionStore(store.session_key).load()


def redis_key(session_key: str) -> str:
    return codec.redis_key(conf.get_config().prefix, session_key)


# Settings ------------------------------------------------------------------------------

SENTINELS = [("127.0.0.1", 26379), ("127.0.0.1", 26380)]
S = {"sentinels": SENTINELS, "service_name": "m"}
C = {"cluster": True, "url": "redis://h:7000"}


def test_sentinel_settings_parse() -> None:
    config = conf.parse(
        {
            "sentinels": SENTINELS,
            "service_name": "mymaster",
            "sentinel_options": {"password": "s3"},
            "url": "rediss://app:pw@/3",
            "options": {"socket_timeout": 2.0},
        }
    )
    assert config.topology == "sentinel"
    assert config.sentinels == tuple(SENTINELS)
    assert connection.sentinel_options(config) == {
        **connection.DEFAULT_SENTINEL_OPTIONS,
        "password": "s3",
    }
    primary = connection.primary_options(config)
    # The URL's credentials, db and TLS apply to the primary; its address comes from the sentinels.
    assert {k: primary[k] for k in ("username", "password", "db", "ssl", "socket_timeout")} == {
        "username": "app",
        "password": "pw",
        "db": 3,
        "ssl": True,
        "socket_timeout": 2.0,
    }
    assert "host" not in primary and "port" not in primary


def test_sentinel_url_may_name_the_service() -> None:
    config = conf.parse(
        {"sentinels": SENTINELS, "service_name": "mymaster", "url": "redis://mymaster/2"}
    )
    assert connection.primary_options(config)["db"] == 2
    assert conf.parse({"sentinels": SENTINELS, "service_name": "m"}).url == conf.SENTINEL_URL


def test_cluster_settings_parse() -> None:
    config = conf.parse({"cluster": True, "startup_nodes": [("10.0.0.1", 7000), ["h", 7001]]})
    assert config.topology == "cluster"
    assert config.startup_nodes == (("10.0.0.1", 7000), ("h", 7001))
    # Without a url the first startup node serves as one.
    assert config.url == "redis://10.0.0.1:7000/0"
    assert conf.parse({"cluster": True, "url": "redis://h:7000"}).url == "redis://h:7000"
    assert conf.parse({}).topology == "single"


def test_wait_settings_parse() -> None:
    assert (conf.parse({}).wait_replicas, conf.parse({}).wait_timeout) == (0, 500)
    config = conf.parse(
        {"wait_replicas": 2, "wait_timeout": 1500, "options": {"socket_timeout": 3}}
    )
    assert driver.wait_of(config) == (2, 1500)
    assert driver.wait_of(conf.parse({"wait_timeout": 100})) == driver.NO_WAIT


@pytest.mark.parametrize(
    ("raw", "key", "message"),
    [
        ({"sentinels": SENTINELS, "service_name": "m", "cluster": True}, "cluster", "sentinels"),
        ({"sentinels": SENTINELS}, "service_name", "must name the primary"),
        ({"sentinels": SENTINELS, "service_name": ""}, "service_name", "must name"),
        ({"service_name": "m"}, "service_name", "only applies"),
        ({"sentinel_options": {}}, "sentinel_options", "only applies"),
        ({"startup_nodes": [("h", 1)]}, "startup_nodes", "only applies"),
        ({"sentinels": [], "service_name": "m"}, "sentinels", "non-empty list"),
        ({"sentinels": "h:26379", "service_name": "m"}, "sentinels", "non-empty list"),
        ({"sentinels": [("h", 26379, 1)], "service_name": "m"}, "sentinels", "pair"),
        ({"sentinels": [("h", "26379")], "service_name": "m"}, "sentinels", "port"),
        ({"sentinels": [("", 26379)], "service_name": "m"}, "sentinels", "host"),
        ({"sentinels": [("h", 70000)], "service_name": "m"}, "sentinels", "port"),
        ({**S, "sentinel_options": 1}, "sentinel_options", "dict"),
        ({**S, "url": "redis://other:6379/0"}, "url", "names a host"),
        ({**S, "url": "unix:///tmp/r.sock"}, "url", "sentinels"),
        ({"cluster": "yes"}, "cluster", "True or False"),
        ({"cluster": True, "url": "redis://h:7000/1"}, "url", "only database 0"),
        ({"cluster": True, "url": "redis://h:7000/?db=2"}, "url", "only database 0"),
        ({"cluster": True, "url": "unix:///tmp/r.sock"}, "url", "startup node"),
        ({"cluster": True, "options": {"db": 1}}, "options", "database 0"),
        ({"cluster": True, "startup_nodes": []}, "startup_nodes", "non-empty"),
        ({"options": {"read_from_replicas": True}}, "options", "primary"),
        ({"cluster": True, "options": {"load_balancing_strategy": 1}}, "options", "primary"),
        ({"wait_replicas": -1}, "wait_replicas", ">= 0"),
        ({"wait_replicas": True}, "wait_replicas", ">= 0"),
        ({"wait_timeout": 0}, "wait_timeout", "positive"),
        ({"wait_replicas": 1, "wait_timeout": 1000}, "wait_timeout", "shorter than the socket"),
        (
            {"wait_replicas": 1, "wait_timeout": 900, "options": {"socket_timeout": 0.5}},
            "wait_timeout",
            "shorter",
        ),
    ],
)  # fmt: skip
def test_bad_topology_settings_name_the_key(raw: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf'SESSION_REDIS\["{key}"\]: .*{message}'):
        conf.parse(raw)


def test_no_socket_timeout_allows_any_wait() -> None:
    config = conf.parse(
        {"wait_replicas": 1, "wait_timeout": 5000, "options": {"socket_timeout": None}}
    )
    assert config.wait_timeout == 5000


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({**S, "sentinel_options": {"nope": 1}}, "sentinel_options"),
        ({**S, "options": {"nope": 1}}, "options"),
        ({**C, "options": {"nope": 1}}, "options"),
        # RedisCluster would drop it without a word: refused instead.
        ({**C, "options": {"health_check_interval": 5}}, "options"),
    ],
)  # fmt: skip
def test_check_options_refuses_what_redis_py_would_not_take(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf'SESSION_REDIS\["{key}"\]'):
        connection.check_options(conf.parse(raw))


def test_check_options_accepts_cluster_and_sentinel_arguments() -> None:
    cluster = {"reinitialize_steps": 1, "require_full_coverage": False, "socket_timeout": 2.0}
    connection.check_options(conf.parse({"cluster": True, "options": cluster}))
    sentinel = {"sentinels": SENTINELS, "service_name": "m", "sentinel_options": {"password": "x"}}
    connection.check_options(conf.parse({**sentinel, "options": {"health_check_interval": 5}}))


def test_what_waits() -> None:
    key = "session:x"
    assert driver.needs_wait((scripts.SET, key, b"v", scripts.PX, 1000, scripts.NX))
    assert driver.needs_wait((scripts.DEL, key))
    assert driver.needs_wait((scripts.EVALSHA, scripts.SAVE, key, b"1", b"j1", b"{}", 1000))
    assert not driver.needs_wait((scripts.EVALSHA, scripts.TOUCH, key, b"1", 1000))
    assert not driver.needs_wait((scripts.GET, key))
    assert not driver.needs_wait((scripts.EXISTS, key))


# Sentinel ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_sentinel_roundtrip(on_sentinel: SentinelGroup, mode: str) -> None:
    key, data = roundtrip(mode, {"user": "ada", "n": 1})
    assert data == {"user": "ada", "n": 1}
    with client_for(on_sentinel.current_primary()) as primary:
        assert primary.get(redis_key(key)) == b'j1:1:{"user":"ada","n":1}'
    client = connection.get_client()
    assert isinstance(client, redis.Redis)
    assert isinstance(client.connection_pool, redis.sentinel.SentinelConnectionPool)


def test_sentinel_async_client_is_sentinel_managed(on_sentinel: SentinelGroup) -> None:
    async def pool_class() -> type:
        client = await connection.get_async_client()
        assert isinstance(client, redis.asyncio.Redis)
        return type(client.connection_pool)

    assert asyncio.run(pool_class()) is redis.asyncio.sentinel.SentinelConnectionPool


@pytest.mark.parametrize("mode", MODES)
def test_sentinel_wait_means_the_replica_has_it(
    on_sentinel: SentinelGroup, settings: Any, mode: str
) -> None:
    use(settings, wait_replicas=1)
    replica = on_sentinel.replicas[0]
    assert replica_in_sync(replica)
    with client_for(replica) as on_replica:
        for n in range(20):
            key, _ = roundtrip(mode, {"n": n})
            # Read from the replica straight after the save returned: WAIT saw it there.
            assert on_replica.get(redis_key(key)) == f'j1:1:{{"n":{n}}}'.encode()
        store = SessionStore(key)
        store["n"] = "updated"
        store.save()
        assert on_replica.get(redis_key(key)) == b'j1:2:{"n":"updated"}'
        store.delete()
        assert on_replica.exists(redis_key(key)) == 0


@pytest.mark.parametrize("mode", MODES)
def test_sentinel_too_few_replicas_is_unavailable(
    on_sentinel: SentinelGroup, settings: Any, mode: str
) -> None:
    use(settings, wait_replicas=2, wait_timeout=50)
    with pytest.raises(SessionUnavailable, match=r"only 1 of 2 replicas .* within 50 ms"):
        roundtrip(mode, {"n": 1})


def sign_in(mode: str, uid: str = "7") -> tuple[str, str]:
    """A new signed-in session (its entry and its key in one round trip on one
    server, one per slot on a Cluster); returns (its Redis key, its index key)."""
    store = SessionStore()
    store["_auth_user_id"] = uid
    if mode == "async":
        async_to_sync(store.acreate)()
    else:
        store.create()
    assert store.session_key is not None
    return redis_key(store.session_key), userindex.index_key(conf.get_config().prefix, uid)


@pytest.mark.parametrize("mode", MODES)
def test_sentinel_sign_in_waits_for_the_entry_and_the_session(
    on_sentinel: SentinelGroup, settings: Any, mode: str
) -> None:
    use(settings, wait_replicas=1)
    replica = on_sentinel.replicas[0]
    assert replica_in_sync(replica)
    with client_for(replica) as on_replica:
        for n in range(10):
            key, index = sign_in(mode, str(n))
            # Read from the replica straight after the create returned.
            assert on_replica.exists(key) == 1
            assert on_replica.hexists(index, key.removeprefix(conf.get_config().prefix))
    use(settings, wait_replicas=2, wait_timeout=50)
    with pytest.raises(SessionUnavailable, match=r"only 1 of 2 replicas"):
        sign_in(mode)


# Cluster -------------------------------------------------------------------------------


def spread(cluster: Cluster, count: int) -> collections.Counter[int]:
    """Create ``count`` sessions; count the keys each primary holds."""
    for n in range(count):
        store = SessionStore()
        store["n"] = n
        store.save()
    counts: collections.Counter[int] = collections.Counter()
    for primary in cluster.primaries():
        with client_for(primary) as client:
            counts[primary.port] = client.dbsize()
    return counts


def test_cluster_spreads_keys_over_every_primary(on_cluster: Cluster) -> None:
    count = 3000
    counts = spread(on_cluster, count)
    assert sum(counts.values()) == count
    assert len(counts) == 3
    # Each of the three primaries serves about a third of the slots: no hot node.
    assert all(0.25 * count < n < 0.42 * count for n in counts.values()), counts


@pytest.mark.parametrize("mode", MODES)
def test_cluster_roundtrip(on_cluster: Cluster, mode: str) -> None:
    key, data = roundtrip(mode, {"user": "ada"})
    assert data == {"user": "ada"}
    with client_for(on_cluster.primary_for(redis_key(key))) as primary:
        assert primary.get(redis_key(key)) == b'j1:1:{"user":"ada"}'


def test_cluster_clients(on_cluster: Cluster) -> None:
    assert isinstance(connection.get_client(), redis.cluster.RedisCluster)

    async def client_class() -> type:
        return type(await connection.get_async_client())

    assert asyncio.run(client_class()) is redis.asyncio.cluster.RedisCluster


def cycle_until_other_node(cluster: Cluster, store: SessionStore, mode: str) -> tuple[str, str]:
    """cycle_key() until the new key lives on another primary; return (old, new) keys."""
    for _ in range(20):
        old = store.session_key
        assert old is not None
        if mode == "async":
            async_to_sync(store.acycle_key)()
        else:
            store.cycle_key()
        new = store.session_key
        assert new is not None and new != old
        if cluster.primary_for(redis_key(old)) is not cluster.primary_for(redis_key(new)):
            return old, new
    raise AssertionError("20 cycle_key() calls never changed node")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_cluster_cycle_key_moves_across_slots(
    on_cluster: Cluster, settings: Any, mode: str, wait_replicas: int
) -> None:
    use(settings, wait_replicas=wait_replicas)
    store = SessionStore()
    store.update({"user": "ada", "cart": [1, 2]})
    store.save()
    old, new = cycle_until_other_node(on_cluster, store, mode)
    assert redis.crc.key_slot(redis_key(old).encode()) != redis.crc.key_slot(
        redis_key(new).encode()
    )
    store.save()
    assert SessionStore(new).load() == {"user": "ada", "cart": [1, 2]}
    assert not SessionStore().exists(old)
    assert SessionStore(old).load() == {}


@pytest.mark.parametrize("mode", MODES)
def test_cluster_wait_means_the_replica_has_it(
    on_cluster: Cluster, settings: Any, mode: str
) -> None:
    use(settings, wait_replicas=1)
    for n in range(30):
        key, _ = roundtrip(mode, {"n": n})
        replica = on_cluster.replica_of(on_cluster.primary_for(redis_key(key)))
        with client_for(replica) as on_replica:
            on_replica.execute_command("READONLY")
            assert on_replica.get(redis_key(key)) == f'j1:1:{{"n":{n}}}'.encode()


@pytest.mark.parametrize("mode", MODES)
def test_cluster_too_few_replicas_is_unavailable(
    on_cluster: Cluster, settings: Any, mode: str
) -> None:
    use(settings, wait_replicas=2, wait_timeout=50)
    with pytest.raises(SessionUnavailable, match=r"only 1 of 2 replicas"):
        roundtrip(mode, {"n": 1})


@pytest.mark.parametrize("mode", MODES)
def test_cluster_sign_in_waits_for_the_entry_and_the_session(
    on_cluster: Cluster, settings: Any, mode: str
) -> None:
    use(settings, wait_replicas=1)
    prefix = conf.get_config().prefix
    for n in range(10):
        key, index = sign_in(mode, str(n))
        for name in (key, index):  # two slots: each waited for on its own primary
            replica = on_cluster.replica_of(on_cluster.primary_for(name))
            with client_for(replica) as on_replica:
                on_replica.execute_command("READONLY")
                if name == key:
                    assert on_replica.exists(key) == 1
                else:
                    assert on_replica.hexists(index, key.removeprefix(prefix))
    use(settings, wait_replicas=2, wait_timeout=50)
    with pytest.raises(SessionUnavailable, match=r"only 1 of 2 replicas"):
        sign_in(mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_cluster_sign_in_loads_scripts_where_missing(
    on_cluster: Cluster, settings: Any, mode: str, wait_replicas: int
) -> None:
    use(settings, wait_replicas=wait_replicas)
    for primary in on_cluster.primaries():
        with client_for(primary) as client:
            client.script_flush()
    key, index = sign_in(mode)
    with client_for(on_cluster.primary_for(index)) as client:
        assert client.hexists(index, key.removeprefix(conf.get_config().prefix))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_cluster_loads_scripts_where_missing(
    on_cluster: Cluster, settings: Any, mode: str, wait_replicas: int
) -> None:
    use(settings, wait_replicas=wait_replicas)
    key, _ = roundtrip(mode, {"n": 0})
    store = SessionStore(key)
    store["n"] = 1
    # A node that never ran the script (new, restarted, or promoted) answers
    # NOSCRIPT to EVALSHA (pipelined with WAIT, or alone): it is sent again as EVAL.
    for primary in on_cluster.primaries():
        with client_for(primary) as client:
            client.script_flush()
    if mode == "async":
        async_to_sync(store.asave)()
    else:
        store.save()
    assert SessionStore(key).load() == {"n": 1}


def new_key_and_nodes(cluster: Cluster) -> tuple[str, str, int, Any, Any]:
    """A session key not stored yet, its Redis key and slot, the primary owning
    that slot, and another primary."""
    session_key = SessionStore()._get_new_session_key()
    key = redis_key(session_key)
    source = cluster.primary_for(key)
    target = next(p for p in cluster.primaries() if p is not source)
    return session_key, key, redis.crc.key_slot(key.encode()), source, target


@pytest.mark.parametrize("mode", MODES)
def test_cluster_wait_follows_ask_during_slot_migration(
    on_cluster: Cluster, settings: Any, mode: str
) -> None:
    """A slot being moved: a new key goes to the importing node, and WAIT runs there."""
    use(settings, wait_replicas=1)
    session_key, key, slot, source, target = new_key_and_nodes(on_cluster)
    with client_for(source) as src, client_for(target) as dst:
        source_id = src.execute_command("CLUSTER", "MYID").decode()
        target_id = dst.execute_command("CLUSTER", "MYID").decode()
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        try:
            # What create() does with the key it drew (setting data first would load it).
            store = SessionStore(session_key)
            if mode == "async":
                async_to_sync(store.asave)(must_create=True)
            else:
                store.save(must_create=True)
            # The source did not have the key, so it sent us (ASK) to the target.
            assert src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
            assert store.session_key == session_key
            assert asking(dst, "GET", key) == b"j1:1:{}"
            with client_for(on_cluster.replica_of(target)) as replica:
                # WAIT ran on the target's connection: its replica has the key.
                assert replica.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        finally:
            asking(dst, "DEL", key)
            for client in (src, dst):
                client.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


def move_slot(cluster: Cluster, slot: int, source: Any, target: Any) -> None:
    """Move an empty ``slot`` from ``source`` to ``target`` the way resharding does,
    then wait until every node agrees (replicas learn it by gossip)."""
    with client_for(source) as src, client_for(target) as dst:
        source_id = src.execute_command("CLUSTER", "MYID").decode()
        target_id = dst.execute_command("CLUSTER", "MYID").decode()
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        for client in (dst, src):  # the target first: it takes a new config epoch
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def agreed() -> bool:
        return all(owner(node, slot) == target.port for node in cluster.nodes)

    wait_for(agreed, 10, f"every node to see slot {slot} on {target.port}")


def owner(node: Any, slot: int) -> int | None:
    with client_for(node) as client:
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
    return None


@pytest.mark.parametrize("mode", MODES)
def test_cluster_wait_follows_moved_after_resharding(
    on_cluster: Cluster, settings: Any, mode: str
) -> None:
    """The client's slot map is stale: MOVED, a refresh, and the pair goes to the new owner."""
    use(settings, wait_replicas=1)
    session_key, key, slot, source, target = new_key_and_nodes(on_cluster)
    with client_for(source) as src:
        assert src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0

    def sync_flow() -> None:
        SessionStore().save()  # the client now holds the slot map
        move_slot(on_cluster, slot, source, target)
        SessionStore(session_key).save(must_create=True)

    async def async_flow() -> None:
        await SessionStore().asave()  # this loop's client now holds the slot map
        move_slot(on_cluster, slot, source, target)
        await SessionStore(session_key).asave(must_create=True)

    try:
        if mode == "async":
            asyncio.run(async_flow())
        else:
            sync_flow()
        with client_for(target) as dst:
            assert dst.get(key) == b"j1:1:{}"
        with client_for(on_cluster.replica_of(target)) as replica:
            assert replica.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
    finally:
        with client_for(target) as dst:
            dst.delete(key)
        if owner(target, slot) == target.port:
            move_slot(on_cluster, slot, target, source)


def asking(client: redis.Redis, *command: Any) -> Any:
    """``command`` on a slot being imported: ASKING first, on the same connection."""
    with client.pipeline(transaction=False) as pipe:
        pipe.execute_command("ASKING")
        pipe.execute_command(*command)
        return pipe.execute()[1]


@pytest.mark.parametrize("mode", MODES)
def test_wait_on_a_server_without_replicas(settings: Any, mode: str) -> None:
    """One server, no replica: WAIT 1 can never be met, and says so; nothing else breaks."""
    with RedisServer() as server:
        settings.SESSION_REDIS = {"url": server.url, "wait_replicas": 1, "wait_timeout": 20}
        with pytest.raises(SessionUnavailable, match="only 0 of 1 replicas"):
            roundtrip(mode, {"n": 1})
        # The write itself reached the server: only the guarantee failed.
        with client_for(server) as client:
            assert client.dbsize() == 1


@pytest.mark.parametrize("mode", MODES)
def test_unreachable_cluster_is_unavailable(settings: Any, mode: str) -> None:
    # Nothing listens there: building the client fails, and that is SessionUnavailable.
    settings.SESSION_REDIS = {
        "cluster": True,
        "url": f"redis://{HOST}:{free_port()}",
        "options": {"socket_connect_timeout": 0.2},
    }
    with pytest.raises(SessionUnavailable):
        roundtrip(mode, {"n": 1})
