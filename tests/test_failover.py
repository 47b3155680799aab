"""SIGKILL the primary while a writer creates and updates sessions; count what survives.

With ``wait_replicas=1`` every acknowledged write is on a replica before the
save returns, so after the failover every acknowledged session reads back with
its last acknowledged data: 0 lost. Without it, writes the replica had not yet
received when the primary died are gone; that number is printed, and the test
only checks that the store recovers.

Just before the kill the replica falls behind, as over a slow or broken link:
the primary refuses it PSYNC (an ACL rule) and drops its connection, so for
BLIP seconds the primary acknowledges writes the replica never gets. That is
the window WAIT closes. Each test starts its own topology with short
failure-detection times (down-after-milliseconds, cluster-node-timeout) and
stops it at the end.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from django_redis_sessions import codec, conf
from django_redis_sessions.exceptions import SessionUnavailable
from django_redis_sessions.session import SessionStore
from testproject.redis_server import RedisServer
from tests.topology import (
    HOST,
    Cluster,
    SentinelGroup,
    client_for,
    replica_in_sync,
    wait_for,
)

pytestmark = pytest.mark.slow

SESSIONS = 150  # the writer keeps creating sessions up to this many, then only updates
WRITE_BEFORE_KILL = 0.6  # seconds of writing before the primary dies
BLIP = 0.3  # seconds between cutting the replica off and the kill
WRITE_AFTER_KILL = 0.5  # and after the store answers again
RECOVERY_TIMEOUT = 20.0
DEADLINE = 45.0  # the writer thread stops by then whatever happens


@dataclass
class Ledger:
    """What the writer was told, and what it found when it read sessions again."""

    # Each session's last acknowledged value.
    acked: dict[str, int] = field(default_factory=dict)
    # Values of saves that raised since then: they may or may not have landed.
    unsure: dict[str, set[int]] = field(default_factory=dict)
    # Sessions that read back with neither: what was found instead.
    lost: dict[str, str] = field(default_factory=dict)
    writes: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, key: str, found: Any) -> None:
        """Record ``key`` as lost unless ``found`` is a value it may have."""
        if key in self.lost or key not in self.acked:
            return
        if found != self.acked[key] and found not in self.unsure.get(key, ()):
            self.lost[key] = (
                f"acknowledged {self.acked[key]}, unsure {sorted(self.unsure.get(key, ()))}, "
                f"found {found}"
            )

    def acknowledge(self, key: str, n: int) -> None:
        self.acked[key] = n
        self.unsure.pop(key, None)
        self.writes += 1


class Writer(threading.Thread):
    """Creates sessions, then updates random ones with increasing numbers, until stopped.

    Every update reads the session first and checks it against the ledger, so
    a loss is seen even when a later update writes the session again.
    """

    def __init__(self, ledger: Ledger, seed: int) -> None:
        super().__init__(daemon=True)
        self.ledger = ledger
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.counter = 0
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set() and time.monotonic() - self.started_at < DEADLINE:
            self.counter += 1
            try:
                self.step(self.counter)
            except SessionUnavailable:
                with self.ledger.lock:
                    self.ledger.failures += 1
                time.sleep(0.005)  # a failing store answers fast: do not spin

    def step(self, n: int) -> None:
        ledger = self.ledger
        with ledger.lock:
            keys = list(ledger.acked)
        if len(keys) < SESSIONS and (not keys or self.random.random() < 0.5):
            store = SessionStore()
            store["n"] = n
            store.save()
            with ledger.lock:
                ledger.acknowledge(store.session_key or "", n)
            return
        key = self.random.choice(keys)
        store = SessionStore(key)
        found = store.get("n")  # loads it; raises while the store is down
        with ledger.lock:
            ledger.check(key, found)
        store["n"] = n
        try:
            store.save()
        except SessionUnavailable:
            with ledger.lock:
                ledger.unsure.setdefault(key, set()).add(n)
            raise
        with ledger.lock:
            if store.session_key != key:  # it was gone: the save created a new session
                ledger.acked.pop(key, None)
                key = store.session_key or ""
            ledger.acknowledge(key, n)


def lost_sessions(ledger: Ledger) -> dict[str, str]:
    """Acknowledged sessions that did not read back with their last acknowledged data."""
    for key in list(ledger.acked):
        ledger.check(key, read_with_retries(key))
    return ledger.lost


def read_with_retries(key: str) -> Any:
    def attempt() -> tuple[Any]:
        try:
            return (SessionStore(key).load().get("n"),)
        except SessionUnavailable:
            return None  # type: ignore[return-value]

    return wait_for(attempt, RECOVERY_TIMEOUT, "a read after failover")[0]


def store_works() -> bool:
    try:
        store = SessionStore()
        store["n"] = 1
        store.save()
        again = SessionStore(store.session_key)
        again["n"] = 2
        again.save()
        return SessionStore(store.session_key).load() == {"n": 2}
    except SessionUnavailable:
        return False


def write_through_failover(kill: Any, wait_failover: Any) -> tuple[Ledger, float]:
    """Run the writer, kill the primary under it, wait for the failover; return the ledger."""
    ledger = Ledger()
    writer = Writer(ledger, seed=6)
    writer.start()
    try:
        time.sleep(WRITE_BEFORE_KILL)
        assert ledger.writes > 0, "the writer wrote nothing before the kill"
        killed_at = time.monotonic()
        kill()
        wait_failover()
        failover = time.monotonic() - killed_at
        time.sleep(WRITE_AFTER_KILL)
    finally:
        writer.stop.set()
        writer.join(DEADLINE)
    assert not writer.is_alive()
    return ledger, failover


def blip_then_kill(primary: RedisServer) -> None:
    """Cut the replica off, let the writer go on for BLIP seconds, then SIGKILL."""
    with client_for(primary) as client:
        # The replica reconnects at once, but may not resync: it stays behind.
        client.execute_command("ACL", "SETUSER", "default", "-psync", "-sync")
        client.execute_command("CLIENT", "KILL", "TYPE", "replica")
    time.sleep(BLIP)
    primary.kill()


def report(
    name: str, ledger: Ledger, lost: dict[str, str], failover: float, extra: str = ""
) -> None:
    print(
        f"\n[failover] {name}: {len(ledger.acked)} sessions, {ledger.writes} acknowledged "
        f"writes, {ledger.failures} refused during the failover ({failover:.1f} s), "
        f"LOST {len(lost)}{extra}"
    )
    for key, what in list(lost.items())[:5]:
        print(f"[failover]   lost {codec.digest(key)}: {what}")


# Sentinel ------------------------------------------------------------------------------


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    with SentinelGroup(down_after_ms=500, failover_timeout_ms=2000) as group:
        yield group


@pytest.mark.parametrize("wait_replicas", [1, 0])
def test_sentinel_primary_killed(
    sentinel_group: SentinelGroup, settings: Any, wait_replicas: int, capsys: Any
) -> None:
    group = sentinel_group
    settings.SESSION_REDIS = group.settings(wait_replicas=wait_replicas)
    old = group.primary
    replica = group.replicas[0]
    ledger, failover = write_through_failover(
        lambda: blip_then_kill(old), lambda: group.wait_for_failover(old.port, RECOVERY_TIMEOUT)
    )
    assert group.current_primary() is replica
    lost = lost_sessions(ledger)
    with capsys.disabled():
        report(f"sentinel, wait_replicas={wait_replicas}", ledger, lost, failover)
    if wait_replicas:
        assert lost == {}
        # The only replica is now the primary: nobody can acknowledge a write, and
        # the store says so instead of pretending.
        with pytest.raises(SessionUnavailable, match="only 0 of 1 replicas"):
            s = SessionStore()
            s["n"] = 1
            s.save()
        # An operator brings the dead node back as a replica: writes resume.
        old.args += ["--replicaof", HOST, str(replica.port)]
        old.start()
        wait_for(lambda: replica_in_sync(old), RECOVERY_TIMEOUT, "the old primary to resync")
    wait_for(store_works, RECOVERY_TIMEOUT, "the store to accept writes again")


# Cluster -------------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster(node_timeout_ms=1000) as started:
        yield started


@pytest.mark.parametrize("wait_replicas", [1, 0])
def test_cluster_primary_killed(
    cluster: Cluster, settings: Any, wait_replicas: int, capsys: Any
) -> None:
    settings.SESSION_REDIS = cluster.settings(wait_replicas=wait_replicas)
    victim = cluster.primaries()[0]
    replica = cluster.replica_of(victim)
    ledger, failover = write_through_failover(
        lambda: blip_then_kill(victim),
        lambda: cluster.wait_for_promotion(replica, RECOVERY_TIMEOUT),
    )
    prefix = conf.get_config().prefix
    on_victim = sum(
        1 for key in ledger.acked if cluster.primary_for(codec.redis_key(prefix, key)) is replica
    )
    assert on_victim > 0, "no session lived on the killed primary"
    lost = lost_sessions(ledger)
    with capsys.disabled():
        report(
            f"cluster, wait_replicas={wait_replicas}",
            ledger,
            lost,
            failover,
            f" ({on_victim} sessions were on the killed primary)",
        )
    if wait_replicas:
        assert lost == {}
        # Bring the dead node back: it rejoins as a replica of the promoted one.
        victim.start()
        wait_for(lambda: replica_in_sync(victim), RECOVERY_TIMEOUT, "the old primary to rejoin")
    wait_for(store_works, RECOVERY_TIMEOUT, "the store to accept writes again")
