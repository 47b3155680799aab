"""``manage.py sessions_report`` on a store of thousands of sessions.

Runs on whichever topology the suite runs on (``--redis-topology``): on the
Cluster it must find every primary's sessions and report each node.
"""

from __future__ import annotations

import base64
import itertools
import json
import zlib
from io import StringIO
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_redis_sessions import codec, conf, connection, inventory
from django_redis_sessions.management.commands.sessions_report import render
from django_redis_sessions.session import SessionStore
from testproject.redis_server import free_port
from tests.conftest import Deployment, session_redis

N = 3000
AUTHENTICATED = 1000
PREFIX = conf.DEFAULT_PREFIX


def stored(data: dict[str, Any], *, compressed: bool = False) -> bytes:
    body = codec.dumps(data)
    if compressed:
        return codec.join(codec.COMPRESSED, b"1", zlib.compress(body))
    return codec.join(codec.PLAIN, b"1", body)


def fill(r: Any, n: int = N, prefix: str = PREFIX) -> dict[str, int]:
    """``n`` sessions as the engine stores them; returns each digest's stored size."""
    sizes = {}
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        data: dict[str, Any] = {"visits": i, "pad": "x" * (i % 700)}
        if i < AUTHENTICATED:
            data["_auth_user_id"] = str(i)
        value = stored(data, compressed=i % 10 == 0)
        digest = codec.digest(f"{i:032d}")
        sizes[digest] = len(value)
        # Lifetimes from 1,000 s to 3,999 s, one per session.
        pipe.set(prefix + digest, value, px=(1000 + i) * 1000)
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()
    return sizes


def report(**options: Any) -> dict[str, Any]:
    out = StringIO()
    call_command("sessions_report", "--json", stdout=out, stderr=StringIO(), **options)
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def test_report_on_thousands_of_sessions(r: Any, redis_deployment: Deployment) -> None:
    sizes = fill(r)
    # Made by the engine: its own key names and values.
    store = SessionStore()
    store["_auth_user_id"] = "42"
    store.save()
    sizes[codec.digest(store.session_key or "")] = len(r.get(PREFIX + (store._digest() or "")))
    # What it cannot read: corrupt, unknown or future (encrypted) formats, another type.
    bad = [b"j1:1:{not json", b"pickle\x80", b"e1:1:opaque", b"z1:1:zzz"]
    for i, value in enumerate(bad):
        r.set(PREFIX + codec.digest(f"bad{i}"), value, ex=100)
    r.hset(PREFIX + codec.digest("hash"), "a", "b")
    r.set(PREFIX + "index:user:7", "not a session")
    r.set("other:" + codec.digest("x"), stored({}))

    data = report(batch=250)

    assert data["complete"] is True
    assert data["sessions"] == N + 1 + 5
    assert data["authenticated"] == AUTHENTICATED + 1
    assert data["unreadable"] == 5
    assert data["other_keys"] == 2  # "index:user:7", and user 42's session index
    assert data["no_expiry"] == 1  # the hash
    assert data["formats"] == {"e1": 1, "j1": N - N // 10 + 2, "other": 2, "z1": N // 10 + 1}
    ordered: list[float] = sorted([*sizes.values(), *map(len, bad)])
    assert data["stored_bytes"]["total"] == sum(ordered)
    for p in (50, 90, 99):
        assert data["stored_bytes"][f"p{p}"] == inventory.percentile(ordered, p)
    assert (data["stored_bytes"]["min"], data["stored_bytes"]["max"]) == (ordered[0], ordered[-1])
    ttl = data["ttl_seconds"]
    assert 100 - 5 <= ttl["min"] <= 100
    assert settings.SESSION_COOKIE_AGE - 60 <= ttl["max"] <= settings.SESSION_COOKIE_AGE
    assert 2400 - 60 <= ttl["p50"] <= 2500
    biggest = sorted(sizes, key=lambda d: sizes[d], reverse=True)[:10]
    assert [row["stored_bytes"] for row in data["largest"]] == [sizes[d] for d in biggest]
    assert {row["digest"] for row in data["largest"]} <= set(sizes)
    # Per node: every primary on a Cluster, and the parts add up.
    nodes = data["nodes"]
    assert sum(n["sessions"] for n in nodes) == data["sessions"]
    assert sum(n["authenticated"] for n in nodes) == data["authenticated"]
    if redis_deployment.topology == "cluster":
        assert len(nodes) == 3 and all(n["sessions"] > 500 for n in nodes)
    else:
        assert len(nodes) == 1
    # Memory: MEMORY USAGE of every session (fewer than --memory-samples).
    assert data["memory"]["estimated"] is False
    assert data["memory"]["sampled_sessions"] == data["sessions"]
    exact = sum(
        r.memory_usage(PREFIX + digest, samples=0)
        for digest in [*sizes, *(codec.digest(f"bad{i}") for i in range(4)), codec.digest("hash")]
    )
    assert abs(data["memory"]["bytes"] - exact) <= exact * 0.01
    # Never the cookie's key, anywhere.
    assert str(store.session_key) not in json.dumps(data)
    out = StringIO()
    call_command("sessions_report", stdout=out)
    assert str(store.session_key) not in out.getvalue()
    assert ("Per node:" in out.getvalue()) == (redis_deployment.topology == "cluster")


def test_memory_is_sampled_on_a_large_store(r: Any) -> None:
    fill(r)
    exact = report()["memory"]["bytes"]
    sampled = report(memory_samples=300)
    assert sampled["memory"]["estimated"] is True
    assert 200 <= sampled["memory"]["sampled_sessions"] <= 400
    assert abs(sampled["memory"]["bytes"] - exact) <= exact * 0.15
    assert report(memory_samples=0)["memory"]["bytes"] is None
    assert report(top=0)["largest"] == []


def test_the_walk_uses_scan_never_keys(r: Any, redis_deployment: Deployment) -> None:
    if redis_deployment.topology == "cluster":
        pytest.skip("per-node command stats: checked on one server")
    fill(r, 1200)
    r.config_resetstat()
    report(batch=100)
    stats = r.info("commandstats")
    assert "cmdstat_keys" not in stats
    assert stats["cmdstat_scan"]["calls"] >= 12


def test_time_is_bounded(r: Any) -> None:
    fill(r, 2000)
    ticks = itertools.count()
    partial = inventory.collect(
        connection.get_client(),
        PREFIX,
        batch=100,
        max_seconds=3,
        clock=lambda: float(next(ticks)),
    )
    assert partial.complete is False
    assert 0 < partial.sessions < 2000
    # A microsecond: the first batch of 100 takes longer.
    data = report(batch=100, max_seconds=1e-6)
    # SCAN's COUNT is a hint: one batch is about 100 keys.
    assert data["complete"] is False and 0 < data["sessions"] < 300
    out = StringIO()
    call_command("sessions_report", "--max-seconds", "1e-6", stdout=out)
    assert "INCOMPLETE: stopped at --max-seconds" in out.getvalue()


def test_human_output_and_progress_bar(r: Any) -> None:
    fill(r, 1500)
    out, err = StringIO(), StringIO()
    call_command("sessions_report", "--progress", "--batch", "500", stdout=out, stderr=err)
    text = out.getvalue()
    assert "sessions:       1,500" in text
    assert "authenticated:  1,000" in text
    assert "Largest sessions (by digest):" in text
    assert "MEMORY USAGE, measured on every session" in text
    assert "keys" in err.getvalue() and "[" in err.getvalue() and "#" in err.getvalue()
    quiet = StringIO()
    call_command("sessions_report", stdout=StringIO(), stderr=quiet)
    assert quiet.getvalue() == ""  # not a terminal: no bar


def test_an_empty_store() -> None:
    data = report()
    assert data["sessions"] == 0
    assert data["ttl_seconds"] is None and data["largest"] == []
    out = StringIO()
    call_command("sessions_report", "--memory-samples", "0", stdout=out)
    assert "time to live:   n/a" in out.getvalue()
    assert "INCOMPLETE" not in out.getvalue()
    assert "memory:         not measured" in out.getvalue()


def test_a_prefix_with_glob_characters_is_matched_literally(r: Any) -> None:
    prefix = "s*[x]?:"
    with override_settings(SESSION_REDIS=session_redis(prefix=prefix)):
        fill(r, 50, prefix=prefix)
        fill(r, 70, prefix="sa[x]b:")
        assert report()["sessions"] == 50


def test_redis_down_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with (
        override_settings(SESSION_REDIS=session_redis(url=url)),
        pytest.raises(CommandError, match="Cannot read the session store: ConnectionError"),
    ):
        call_command("sessions_report", stdout=StringIO())


@pytest.mark.single_only
def test_missing_memory_permission_is_reported(r: Any, redis_url: str) -> None:
    fill(r, 20)
    r.execute_command(
        "ACL", "SETUSER", "reporter", "on", ">pw", "~*", "-@all",
        "+scan", "+dbsize", "+get", "+pttl", "+ping", "+hello",
    )  # fmt: skip
    try:
        url = redis_url.replace("redis://", "redis://reporter:pw@")
        with override_settings(SESSION_REDIS=session_redis(url=url)):
            data = report()
            out = StringIO()
            call_command("sessions_report", stdout=out)
        assert data["sessions"] == 20
        assert data["memory"]["bytes"] is None and "permission" in data["memory"]["error"]
        assert "not measured (" in out.getvalue()
        r.execute_command("ACL", "SETUSER", "reporter", "-get")
        with (
            override_settings(SESSION_REDIS=session_redis(url=url)),
            pytest.raises(CommandError, match="NoPermissionError"),
        ):
            report()
    finally:
        r.acl_deluser("reporter")


@pytest.mark.parametrize(
    "args",
    [["--batch", "0"], ["--max-seconds", "0"], ["--memory-samples", "-1"], ["--top", "x"]],
)
def test_bad_arguments_are_refused(args: list[str]) -> None:
    with pytest.raises(CommandError, match="invalid"):
        call_command("sessions_report", *args, stdout=StringIO())


def test_other_engines_are_refused() -> None:
    with (
        override_settings(SESSION_ENGINE="django.contrib.sessions.backends.db"),
        pytest.raises(CommandError, match="SESSION_ENGINE"),
    ):
        call_command("sessions_report", stdout=StringIO())


def test_reservoir_keeps_a_bounded_uniform_sample() -> None:
    reservoir = inventory.Reservoir(size=100)
    for value in range(10_000):
        reservoir.add(value)
    assert len(reservoir.values) == 100 and reservoir.seen == 10_000
    summary = reservoir.summary()
    assert summary is not None and 3000 <= summary["p50"] <= 7000


def test_node_names(redis_deployment: Deployment) -> None:
    assert inventory.nodes_of(redis.Redis(unix_socket_path="/run/r.sock"))[0][0] == "/run/r.sock"
    assert inventory.nodes_of(redis.Redis(port=7001))[0][0] == "localhost:7001"


def test_per_node_lines() -> None:
    result = inventory.Report("session:", "cluster", 10, 3)
    result.nodes = [inventory.NodeStats("10.0.0.1:7000", sessions=2, authenticated=1)]
    result.nodes.append(
        inventory.NodeStats("10.0.0.2:7000", sessions=1, memory_sampled=1, memory_sampled_bytes=90)
    )
    result.sessions = 3
    result.note_size(500, "a" * 32, None, "10.0.0.1:7000")
    lines = render(result.to_dict())
    # No sample on the first node: the others' mean stands in.
    assert "  10.0.0.1:7000: 2 sessions, 1 authenticated, memory 180 B" in lines
    assert "  10.0.0.2:7000: 1 sessions, 0 authenticated, memory 90 B" in lines
    assert any(line.endswith("no ttl  10.0.0.1:7000") for line in lines)
    assert result.to_dict()["memory"] == {
        "bytes": 270,
        "sampled_sessions": 1,
        "estimated": True,
        "error": None,
    }
    unmeasured = inventory.Report("session:", "cluster", 0, 3)
    unmeasured.nodes = [inventory.NodeStats("a", sessions=2), inventory.NodeStats("b")]
    assert "memory n/a" in render(unmeasured.to_dict())[-1]


def test_keys_that_are_no_sessions(r: Any) -> None:
    for i in range(30):
        r.set(f"{PREFIX}user:{i}", "x")
    data = report(batch=10)
    assert (data["sessions"], data["other_keys"]) == (0, 30)


def test_a_session_gone_between_scan_and_read(redis_url: str) -> None:
    # On a Cluster the key may belong to another node than redis_url's: MOVED,
    # as when a slot moves during the walk; skipped as well.
    result = inventory.Report(PREFIX, "single", 10, 3)
    stats = inventory.NodeStats("n")
    with redis.Redis.from_url(redis_url) as node:
        inventory._read_batch(result, stats, node, [PREFIX + codec.digest("gone")], 1)
    assert result.sessions == 0 and stats.keys_scanned == 1


def test_a_client_that_decodes_responses(
    r: Any, redis_url: str, redis_deployment: Deployment
) -> None:
    if redis_deployment.topology == "cluster":
        pytest.skip("a plain client on one node of a Cluster sees only that node's keys")
    fill(r, 40)
    r.delete(*[PREFIX + codec.digest(f"{i:032d}") for i in range(0, 40, 10)])  # the zlib ones
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        result = inventory.collect(client, PREFIX).to_dict()
    assert (result["sessions"], result["authenticated"], result["unreadable"]) == (36, 36, 0)


def test_encrypted_sessions_are_read_with_the_configured_keys(r: Any) -> None:
    key = "k1:" + base64.urlsafe_b64encode(bytes(range(32))).decode()
    with override_settings(SESSION_REDIS=session_redis(encryption_keys=[key])):
        for user in ("1", None):
            store = SessionStore()
            store["_auth_user_id"] = user
            store.save()
            assert r.get(PREFIX + (store._digest() or "")).startswith(b"e1:")
        data = report()
    assert (data["sessions"], data["authenticated"], data["unreadable"]) == (2, 1, 0)
    assert data["formats"] == {"e1": 2}
    # Without the keys the same values cannot be opened: counted, never a crash.
    data = report()
    assert (data["sessions"], data["authenticated"], data["unreadable"]) == (2, 0, 2)
