"""Who is signed in where: the per-user session index, through the real middleware.

Every API call runs twice, through the sync functions and their async twins;
on ``--redis-topology=sentinel|cluster`` the whole module runs there too (on a
Cluster the index and the sessions live in different slots).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import django
import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.base import UpdateError
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient, Client, override_settings

from django_redis_sessions import codec, conf, plan, scripts, userindex, users
from django_redis_sessions.connection import Server
from django_redis_sessions.exceptions import SessionUnavailable
from django_redis_sessions.session import SessionStore
from testproject.redis_server import free_port
from tests.conftest import session_redis
from tests.twins import ENGINE_COMMANDS, Sends, command_calls

COOKIE = settings.SESSION_COOKIE_NAME
pytestmark = pytest.mark.django_db
needs_alogin = pytest.mark.skipif(
    django.VERSION < (5, 0), reason="alogin/auser arrived in Django 5.0"
)


class Api:
    """``users.<name>`` in sync mode, ``users.a<name>`` in a fresh event loop in async mode."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __getattr__(self, name: str) -> Any:
        if self.mode == "async":
            return async_to_sync(getattr(users, "a" + name))
        return getattr(users, name)


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Api:
    return Api(request.param)


@pytest.fixture
def ada(db: None) -> User:
    return User.objects.create_user("ada", password="pw")


@pytest.fixture
def bob(db: None) -> User:
    return User.objects.create_user("bob", password="pw")


def browser(agent: str, ip: str = "10.0.0.1") -> Client:
    return Client(HTTP_USER_AGENT=agent, REMOTE_ADDR=ip)


def signed_in(agent: str, username: str = "ada", ip: str = "10.0.0.1") -> Client:
    client = browser(agent, ip)
    assert client.get(f"/login/?username={username}").status_code == 200
    return client


def key_of(client: Client) -> str:
    return client.cookies[COOKIE].value


def digest_of(client: Client) -> str:
    return codec.digest(key_of(client))


def index_of(user: User) -> str:
    return users.index_key(conf.get_config().prefix, str(user.pk))


def whoami(client: Client) -> str:
    return client.get("/whoami/").content.decode()


# Listing ----------------------------------------------------------------------------


def test_every_signed_in_client_is_listed_newest_first(api: Api, ada: User, bob: User) -> None:
    firefox = signed_in("Firefox", ip="10.0.0.1")
    time.sleep(0.01)
    chrome = signed_in("Chrome", ip="10.0.0.2")
    time.sleep(0.01)
    forced = Client(HTTP_USER_AGENT="ignored")
    forced.force_login(ada)  # a fake request: no IP, no user agent
    signed_in("Safari", username="bob")

    sessions = api.get_sessions(ada, current=key_of(chrome))
    assert [s.id for s in sessions] == [digest_of(forced), digest_of(chrome), digest_of(firefox)]
    assert [(s.user_agent, s.ip, s.current) for s in sessions] == [
        (None, None, False),
        ("Chrome", "10.0.0.2", True),
        ("Firefox", "10.0.0.1", False),
    ]
    for session in sessions:
        assert key_of(chrome) not in session.id  # handles are digests, never keys
        assert session.created <= session.last_seen
        assert session.expires is not None
        remaining = (session.expires - session.last_seen).total_seconds()
        assert settings.SESSION_COOKIE_AGE - 5 < remaining <= settings.SESSION_COOKIE_AGE + 1
    assert [s.user_agent for s in api.get_sessions(bob.pk)] == ["Safari"]  # a pk works too


def test_current_accepts_the_session_itself(api: Api, ada: User) -> None:
    client = signed_in("Firefox")
    store = SessionStore(key_of(client))
    assert [s.current for s in api.get_sessions(ada, current=store)] == [True]
    assert [s.current for s in api.get_sessions(ada, current="garbage")] == [False]


def test_user_without_sessions_has_none(api: Api, ada: User) -> None:
    assert api.get_sessions(ada) == []
    assert api.end_sessions(ada) == 0


def test_index_lives_as_long_as_its_newest_session(ada: User, r: redis.Redis) -> None:
    client = signed_in("Firefox")
    session_ttl = r.pttl("session:" + digest_of(client))
    index_ttl = r.pttl(index_of(ada))
    assert session_ttl > 0
    interval = plan.get_plan().users.activity_interval * 1000
    assert session_ttl < index_ttl <= session_ttl + interval + users.SLACK_MS + 1000


def test_logout_is_unlisted_and_the_last_one_takes_the_index(
    api: Api, ada: User, r: redis.Redis
) -> None:
    firefox = signed_in("Firefox")
    chrome = signed_in("Chrome")
    firefox.get("/logout/")
    assert [s.user_agent for s in api.get_sessions(ada)] == ["Chrome"]
    chrome.get("/logout/")
    assert api.get_sessions(ada) == []
    assert r.keys("session:*") == []


@needs_alogin
def test_async_login_and_logout_are_indexed(api: Api, ada: User, r: redis.Redis) -> None:
    async def flow() -> tuple[list[str | None], list[bytes]]:
        client = AsyncClient()
        login = await client.get("/alogin/?username=ada", headers={"User-Agent": "Async Firefox"})
        assert login.status_code == 200
        assert (await client.get("/awhoami/")).content == b"ada"
        listed = [s.user_agent for s in await users.aget_sessions(ada)]
        await client.get("/alogout/")
        return listed, r.keys("session:*")  # type: ignore[return-value]

    listed, left = async_to_sync(flow)()
    assert listed == ["Async Firefox"]
    assert left == []


def test_session_deleted_by_hand_is_not_listed_and_pruned(
    api: Api, ada: User, r: redis.Redis
) -> None:
    gone = signed_in("Firefox")
    kept = signed_in("Chrome")
    r.delete("session:" + digest_of(gone))  # no logout: e.g. DEL by an operator
    assert [s.id for s in api.get_sessions(ada)] == [digest_of(kept)]
    assert r.hkeys(index_of(ada)) == [digest_of(kept).encode()]


def test_expired_sessions_are_unlisted_and_the_index_goes(
    api: Api, ada: User, r: redis.Redis
) -> None:
    with override_settings(SESSION_COOKIE_AGE=2):
        signed_in("Firefox")
        signed_in("Chrome")
        assert len(api.get_sessions(ada)) == 2
        time.sleep(2.2)
        assert api.get_sessions(ada) == []
    assert r.exists(index_of(ada)) == 0  # pruned entry by entry, then gone


def test_cycle_key_moves_the_entry_and_keeps_created(api: Api, ada: User) -> None:
    client = signed_in("Firefox")
    (before,) = api.get_sessions(ada)
    store = SessionStore(key_of(client))
    store.cycle_key()
    (after,) = api.get_sessions(ada)
    assert after.id == codec.digest(store.session_key or "") != before.id
    assert after.created == before.created
    assert after.user_agent == "Firefox"  # no request at hand: the stored metadata is kept


def test_async_cycle_key_moves_the_entry(ada: User) -> None:
    client = signed_in("Firefox")

    async def cycle() -> str | None:
        store = SessionStore(key_of(client))
        await store.aload()
        await store.acycle_key()
        return store.session_key

    new_key = async_to_sync(cycle)()
    assert [s.id for s in users.get_sessions(ada)] == [codec.digest(new_key or "")]


# Ending ----------------------------------------------------------------------------


def test_end_one_session(api: Api, ada: User, bob: User, r: redis.Redis) -> None:
    firefox = signed_in("Firefox")
    chrome = signed_in("Chrome")
    bobs = signed_in("Safari", username="bob")
    target = digest_of(firefox)
    assert api.end_session(bob, target) is False  # not bob's: untouched
    assert api.end_session(ada, "../" + target) is False
    assert api.end_session(ada, target.upper()) is False
    assert whoami(firefox) == "ada"
    assert api.end_session(ada, target) is True
    assert api.end_session(ada, target) is False  # already gone
    assert [s.id for s in api.get_sessions(ada)] == [digest_of(chrome)]
    # Gone for its holder on the very next request, and a new session on the next save.
    response = firefox.get("/whoami/")
    assert response.content == b"anonymous"
    assert firefox.get("/counter/").content == b"1"
    assert digest_of(firefox) != target
    assert whoami(chrome) == "ada"
    assert whoami(bobs) == "bob"


def test_end_other_sessions_keeps_the_current_one(api: Api, ada: User, bob: User) -> None:
    here = signed_in("Firefox")
    others = [signed_in("Chrome"), signed_in("Edge")]
    bobs = signed_in("Safari", username="bob")
    assert api.end_sessions(ada, keep=SessionStore(key_of(here))) == 2
    assert [whoami(c) for c in others] == ["anonymous", "anonymous"]
    assert whoami(here) == "ada"
    assert [s.id for s in api.get_sessions(ada)] == [digest_of(here)]
    assert whoami(bobs) == "bob"


def test_end_all_sessions(api: Api, ada: User, r: redis.Redis) -> None:
    clients = [signed_in("Firefox"), signed_in("Chrome")]
    assert api.end_sessions(ada) == 2
    assert [whoami(c) for c in clients] == ["anonymous", "anonymous"]
    assert r.keys("session:*") == []


def test_in_flight_save_of_an_ended_session_does_not_bring_it_back(
    ada: User, r: redis.Redis
) -> None:
    client = signed_in("Firefox")
    assert client.get("/end-own-sessions/").status_code == 400  # SessionInterrupted
    assert r.keys("session:*") == []
    assert users.get_sessions(ada) == []
    assert whoami(client) == "anonymous"


@needs_alogin
def test_async_in_flight_save_of_an_ended_session_does_not_bring_it_back(
    ada: User, r: redis.Redis
) -> None:
    async def flow() -> int:
        client = AsyncClient()
        await client.get("/alogin/?username=ada")
        return (await client.get("/aend-own-sessions/")).status_code

    assert async_to_sync(flow)() == 400
    assert r.keys("session:*") == []


def test_in_flight_stamp_refresh_of_an_ended_session_leaves_no_entry(
    ada: User, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = signed_in("Firefox")
    request_a = SessionStore(key_of(client))
    assert request_a["_auth_user_id"] == str(ada.pk)
    users.end_sessions(ada)
    # The stamp is due: the save upserts the entry first, then finds the session gone.
    later = users._now_ms() + 3600_000
    monkeypatch.setattr(users, "_now_ms", lambda: later)
    request_a["cart"] = [1]
    with pytest.raises(UpdateError):
        request_a.save()
    assert r.keys("session:*") == []


def test_password_change_one_liner_ends_the_others(ada: User) -> None:
    here = signed_in("Firefox")
    other = signed_in("Chrome")
    assert here.get("/change-password/?password=new").content == b"1"
    assert whoami(here) == "ada"  # update_session_auth_hash cycled and kept it
    assert whoami(other) == "anonymous"
    assert [s.id for s in users.get_sessions(ada)] == [digest_of(here)]


def test_deactivated_or_deleted_user_is_signed_out_everywhere(ada: User, bob: User) -> None:
    adas = [signed_in("Firefox"), signed_in("Chrome")]
    bobs = signed_in("Safari", username="bob")
    ada.first_name = "Ada"
    ada.save()  # an active user's save ends nothing
    assert [whoami(c) for c in adas] == ["ada", "ada"]
    ada.is_active = False
    ada.save()
    assert users.get_sessions(ada) == []
    assert [whoami(c) for c in adas] == ["anonymous", "anonymous"]
    bob.delete()
    assert whoami(bobs) == "anonymous"
    assert users.get_sessions(bob.pk or "2") == []


# Cost per request ---------------------------------------------------------------------


def calls(r: redis.Redis) -> dict[str, int]:
    """Commands the server ran since the last reset (scripts' own commands included)."""
    stats = r.info("commandstats")
    return {
        name: int(stats[f"cmdstat_{name}"]["calls"])
        for name in ENGINE_COMMANDS
        if f"cmdstat_{name}" in stats
    }


def test_ordinary_requests_cost_what_they_cost_without_the_index(
    ada: User, r: redis.Redis, monkeypatch: pytest.MonkeyPatch, redis_server: Server
) -> None:
    client = signed_in("Firefox")
    r.config_resetstat()
    assert whoami(client) == "ada"  # reads the session: one GET, as for anyone
    assert calls(r) == {"get": 1}
    r.config_resetstat()
    assert client.get("/counter/").content == b"1"  # changes it: GET + the save
    if redis_server.has_ifeq:  # one native SET ... IFEQ
        assert calls(r) == {"get": 1, "set": 1}
    else:  # the save script
        assert calls(r) == {"get": 1, "evalsha": 1, "getrange": 1, "set": 1}
    (before,) = users.get_sessions(ada)

    # Once activity_interval has passed, one request refreshes last_seen: the
    # index script first, then the session's stamp, rewritten in place.
    later = userindex.now_ms() + plan.get_plan().users.activity_interval * 1000
    monkeypatch.setattr(userindex, "now_ms", lambda: later)
    r.config_resetstat()
    assert whoami(client) == "ada"
    refresh = calls(r)
    assert (refresh["get"], refresh["evalsha"], refresh["hset"], refresh["set"]) == (1, 2, 1, 1)
    (after,) = users.get_sessions(ada)
    assert after.last_seen > before.last_seen
    assert after.created == before.created
    r.config_resetstat()
    assert whoami(client) == "ada"  # and the next one is ordinary again
    assert calls(r) == {"get": 1}
    assert command_calls(r) == 1


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch, r: redis.Redis) -> Sends:
    for script in scripts.SCRIPTS:  # as on a server that ran them before
        r.script_load(script.source)
    return Sends(monkeypatch)


@pytest.fixture
def on_cluster(redis_topology: str) -> bool:
    return redis_topology == "cluster"


# A sign-in's entry and session (INDEX_PUT, SET NX) share one round trip on one
# server; on a Cluster their keys are in different slots, one round trip each.
# Server-side, for a user's first session the script runs TYPE, HSET, PEXPIRE
# (nothing to prune or evict); the session's SET NX goes with it.
SIGN_IN_COMMANDS = {"evalsha": 1, "type": 1, "hset": 1, "pexpire": 1, "set": 1}


def new_session(uid: Any) -> SessionStore:
    store = SessionStore()
    store["_auth_user_id"] = str(uid)
    return store


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_sign_in_is_one_round_trip(
    ada: User, bob: User, r: redis.Redis, sends: Sends, on_cluster: bool, mode: str
) -> None:
    """The benchmark's sign-in: create() of a session holding a user id."""

    async def acreate() -> SessionStore:
        await new_session(bob.pk).acreate()  # the loop's client connected, the script cached
        r.config_resetstat()
        sends.count = 0
        store = SessionStore()
        store["_auth_user_id"] = str(ada.pk)
        await store.acreate()
        return store

    if mode == "sync":
        new_session(bob.pk).create()  # connected, the script cached
        r.config_resetstat()
        sends.count = 0
        store = SessionStore()
        store["_auth_user_id"] = str(ada.pk)
        store.create()
    else:
        store = async_to_sync(acreate)()
    assert sends.count == (2 if on_cluster else 1)
    stats = calls(r)
    assert stats == SIGN_IN_COMMANDS
    assert command_calls(r) == 5
    assert [s.id for s in users.get_sessions(ada)] == [store.digest_of(store.session_key or "")]


def test_login_through_the_middleware_writes_entry_and_session_in_one_round_trip(
    ada: User, r: redis.Redis, sends: Sends, on_cluster: bool, redis_server: Server
) -> None:
    """Django's login() on an anonymous session: cycle_key() (the load, the new
    key's SET NX, the old key's DEL), then the response's save of the signed-in
    session with its entry, together."""
    client = browser("Firefox")
    assert client.get("/counter/").content == b"1"
    anonymous = key_of(client)
    r.config_resetstat()
    sends.count = 0
    assert client.get("/login/?username=ada").status_code == 200
    assert sends.count == (5 if on_cluster else 4)
    stats = calls(r)
    # The index script, then the save: native (SET ... IFEQ) or the save script.
    saves = 1 if redis_server.has_ifeq else 2
    assert (stats["get"], stats["del"], stats["evalsha"]) == (1, 1, saves)
    assert key_of(client) != anonymous
    assert [s.id for s in users.get_sessions(ada)] == [digest_of(client)]
    assert whoami(client) == "ada"


@needs_alogin
def test_async_login_through_the_middleware_counts_the_same(
    ada: User, sends: Sends, on_cluster: bool
) -> None:
    async def flow() -> tuple[int, int]:
        client = AsyncClient()
        assert (await client.get("/acounter/")).content == b"1"
        sends.count = 0
        assert (await client.get("/alogin/?username=ada")).status_code == 200
        anonymous = sends.count
        fresh = AsyncClient()
        sends.count = 0
        assert (await fresh.get("/alogin/?username=ada")).status_code == 200
        return anonymous, sends.count

    assert async_to_sync(flow)() == ((5, 3) if on_cluster else (4, 2))
    assert len(users.get_sessions(ada)) == 2


def test_login_without_a_session_is_two_round_trips(
    ada: User, r: redis.Redis, sends: Sends, on_cluster: bool
) -> None:
    """No cookie yet: cycle_key() creates the empty session (SET NX), then the
    response's save writes it signed in, its entry in the same round trip."""
    client = browser("Firefox")
    sends.count = 0
    assert client.get("/login/?username=ada").status_code == 200
    assert sends.count == (3 if on_cluster else 2)
    assert [s.id for s in users.get_sessions(ada)] == [digest_of(client)]


def test_cycle_key_of_a_signed_in_session(
    ada: User, r: redis.Redis, sends: Sends, on_cluster: bool
) -> None:
    """The new key and its entry in one round trip; then the old key ends (its DEL,
    its entry's HDEL)."""
    client = signed_in("Firefox")
    store = SessionStore(key_of(client))
    assert store["_auth_user_id"] == str(ada.pk)
    old = store.session_key
    r.config_resetstat()
    sends.count = 0
    store.cycle_key()
    assert sends.count == (4 if on_cluster else 3)
    stats = calls(r)
    assert (stats["set"], stats["del"], stats["hdel"]) == (1, 1, 1)
    assert store.session_key != old
    (entry,) = users.get_sessions(ada)
    assert entry.id == store.digest_of(store.session_key or "")
    assert entry.user_agent == "Firefox"  # carried over from the old key's entry


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_sign_in_on_a_taken_key_takes_its_entry_back(
    ada: User, bob: User, r: redis.Redis, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The entry went in with the SET NX that found the key taken: it is taken
    back, and the create tries again with a new key."""
    victim = new_session(bob.pk)
    victim.create()
    keys = iter([victim.session_key, "n" * 32])
    monkeypatch.setattr(SessionStore, "_get_new_session_key", lambda self: next(keys))
    store = new_session(ada.pk)
    if mode == "async":
        async_to_sync(store.acreate)()
    else:
        store.create()
    assert store.session_key == "n" * 32
    assert [s.id for s in users.get_sessions(ada)] == [store.digest_of("n" * 32)]
    entries = r.hkeys(userindex.index_key("session:", str(ada.pk)))
    assert entries == [store.digest_of("n" * 32).encode()]  # no stale entry
    assert SessionStore(victim.session_key).load()["_auth_user_id"] == str(bob.pk)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_sign_in_after_the_server_lost_its_scripts(
    ada: User, r: redis.Redis, sends: Sends, on_cluster: bool, mode: str
) -> None:
    """NOSCRIPT (a restart, a failover, SCRIPT FLUSH): the entry's script goes again
    by its source, one round trip more; the new key reaches no one before it."""
    assert not SessionStore().exists("x" * 32)  # connected
    r.script_flush()
    sends.count = 0
    store = new_session(ada.pk)
    if mode == "async":
        async_to_sync(store.acreate)()
    else:
        store.create()
    if not on_cluster:  # where SCRIPT FLUSH reached every node
        assert sends.count == 2
    assert [s.id for s in users.get_sessions(ada)] == [store.digest_of(store.session_key or "")]


def test_anonymous_sessions_never_touch_an_index(client: Client, r: redis.Redis) -> None:
    r.config_resetstat()
    assert client.get("/counter/").content == b"1"
    assert client.get("/counter/").content == b"2"
    stats = r.info("commandstats")
    assert not {"cmdstat_hset", "cmdstat_hgetall", "cmdstat_hdel"} & stats.keys()
    assert r.keys("session:u:*") == []


def test_sessions_from_before_the_index_are_indexed_on_their_next_request(
    ada: User, r: redis.Redis
) -> None:
    with override_settings(SESSION_REDIS=session_redis(user_index=False)):
        client = signed_in("Firefox")
        assert r.keys("session:u:*") == []
        assert users.MARKER not in SessionStore(key_of(client)).load()
    assert users.get_sessions(ada) == []
    assert whoami(client) == "ada"
    assert [s.id for s in users.get_sessions(ada)] == [digest_of(client)]


def test_switching_the_index_off_drops_the_entry_on_the_next_save(
    ada: User, r: redis.Redis
) -> None:
    client = signed_in("Firefox")
    with override_settings(SESSION_REDIS=session_redis(user_index=False)):
        assert client.get("/counter/").content == b"1"
        assert users.MARKER not in SessionStore(key_of(client)).load()
    assert r.keys("session:u:*") == []


# Limits and privacy -----------------------------------------------------------------


def test_per_user_cap_ends_the_least_recently_seen(ada: User, r: redis.Redis) -> None:
    with override_settings(SESSION_REDIS=session_redis(max_sessions_per_user=2)):
        oldest = signed_in("Firefox")
        time.sleep(0.01)
        middle = signed_in("Chrome")
        time.sleep(0.01)
        newest = signed_in("Edge")
        assert [s.user_agent for s in users.get_sessions(ada)] == ["Edge", "Chrome"]
        assert r.exists("session:" + digest_of(oldest)) == 0
        assert whoami(oldest) == "anonymous"
        assert [whoami(middle), whoami(newest)] == ["ada", "ada"]


def test_user_agent_is_truncated_and_both_are_optional(ada: User, bob: User) -> None:
    signed_in("x" * 5000)
    (session,) = users.get_sessions(ada)
    assert session.user_agent == "x" * users.USER_AGENT_LENGTH
    with override_settings(SESSION_REDIS=session_redis(client_ip=None, store_user_agent=False)):
        signed_in("Firefox", username="bob")
        (session,) = users.get_sessions(bob)
    assert (session.ip, session.user_agent) == (None, None)


def forwarded_for(request: Any) -> str:
    return str(request.META["HTTP_X_FORWARDED_FOR"]).split(",")[0].strip()


def test_client_ip_is_pluggable(ada: User) -> None:
    with override_settings(SESSION_REDIS=session_redis(client_ip="tests.test_users.forwarded_for")):
        client = Client(HTTP_X_FORWARDED_FOR="203.0.113.7, 10.0.0.1", REMOTE_ADDR="10.0.0.1")
        client.get("/login/?username=ada")
        (session,) = users.get_sessions(ada)
    assert session.ip == "203.0.113.7"


def test_client_ip_that_does_not_import_is_named(ada: User) -> None:
    with override_settings(SESSION_REDIS=session_redis(client_ip="tests.nowhere.ip")):
        client = browser("Firefox")
        with pytest.raises(ImproperlyConfigured, match=r'SESSION_REDIS\["client_ip"\]'):
            client.get("/login/?username=ada")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("activity_interval", -1, "integer >= 0"),
        ("activity_interval", "60", "integer >= 0"),
        ("user_index", "yes", "True or False"),
        ("store_user_agent", 1, "True or False"),
        ("client_ip", 42, "dotted path"),
        ("max_sessions_per_user", 0, "positive integer"),
    ],
)
def test_bad_settings_are_refused(key: str, value: Any, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf'SESSION_REDIS\["{key}"\].*{message}'):
        plan.parse({key: value})


def test_settings_defaults() -> None:
    config = plan.parse({}).users
    assert (config.enabled, config.activity_interval, config.max_sessions_per_user) == (
        True,
        60,
        100,
    )
    assert config.client_ip == "django_redis_sessions.users.remote_addr"
    assert plan.parse({"client_ip": None}).users.client_ip is None


# Bad input ---------------------------------------------------------------------------


def test_garbage_in_the_index_is_pruned_not_listed(api: Api, ada: User, r: redis.Redis) -> None:
    client = signed_in("Firefox")
    index = index_of(ada)
    r.hset(index, "not-a-digest", "1|2|3|{}")
    r.hset(index, "0" * 32, "garbage")
    r.hset(index, "1" * 32, "9999999999999|1|1|[not json")
    r.hset(index, "2" * 32, '9999999999999|1|1|["a list"]')
    sessions = api.get_sessions(ada)
    assert [s.id for s in sessions] == [digest_of(client)]
    assert r.hkeys(index) == [digest_of(client).encode()]
    assert api.end_session(ada, "0" * 32) is False


def test_garbage_meta_lists_without_ip(ada: User, r: redis.Redis) -> None:
    client = signed_in("Firefox")
    r.hset(index_of(ada), digest_of(client), '9999999999999|1|1|{"ip": 7, "ua": ""}')
    (session,) = users.get_sessions(ada)
    assert (session.ip, session.user_agent) == (None, None)
    for meta in ("[not json", '["a list"]'):
        r.hset(index_of(ada), digest_of(client), f"9999999999999|1|1|{meta}")
        (session,) = users.get_sessions(ada)
        assert session.ip is None


def test_index_key_of_another_type_is_ignored(
    api: Api, ada: User, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    r.set(index_of(ada), "someone else's")
    with caplog.at_level(logging.WARNING, logger="django_redis_sessions"):
        client = signed_in("Firefox")  # the login still works
        assert whoami(client) == "ada"
        assert api.get_sessions(ada) == []
        assert api.end_sessions(ada) == 0
    assert "is not a hash" in caplog.text
    assert r.get(index_of(ada)) == b"someone else's"


@pytest.mark.parametrize(
    "marker",
    [None, "garbage", [1, 2, 3], ["1", 2, 3, "x"], ["someone else", 1, 1, 9999999999999]],
)
def test_garbage_stamp_in_the_session_is_restamped(ada: User, r: redis.Redis, marker: Any) -> None:
    client = signed_in("Firefox")
    # Written behind the engine's back, as a bug or an old version might have.
    redis_key = "session:" + digest_of(client)
    data = SessionStore(key_of(client)).load()
    data[users.MARKER] = marker
    r.set(redis_key, codec.join(codec.PLAIN, b"7", codec.dumps(data)), keepttl=True)
    r.delete(index_of(ada))
    assert whoami(client) == "ada"
    assert [s.id for s in users.get_sessions(ada)] == [digest_of(client)]
    stamp = SessionStore(key_of(client)).load()[users.MARKER]
    assert stamp[0] == str(ada.pk)


def test_odd_user_ids_are_not_indexed(r: redis.Redis) -> None:
    from django.contrib.auth.models import AnonymousUser

    store = SessionStore()
    store.update({"_auth_user_id": ["not", "an", "id"]})
    store.save()
    assert r.keys("session:u:*") == []
    # Loaded again (the index's load hook sees it too): read as stored, not indexed.
    assert SessionStore(store.session_key).load()["_auth_user_id"] == ["not", "an", "id"]
    assert r.keys("session:u:*") == []
    with pytest.raises(TypeError):
        users.get_sessions(None)
    with pytest.raises(TypeError, match="anonymous"):
        users.end_sessions(AnonymousUser())


def test_index_and_sessions_are_separate_keys_in_their_own_slots(ada: User, r: redis.Redis) -> None:
    from redis.crc import key_slot

    clients = [signed_in(f"Browser {n}") for n in range(4)]
    index_slot = key_slot(index_of(ada).encode())
    session_slots = {key_slot(f"session:{digest_of(c)}".encode()) for c in clients}
    # Nothing ties them to one slot (no hash tags): on a Cluster they spread over nodes.
    assert session_slots - {index_slot}
    assert "{" not in index_of(ada)
    assert len(users.get_sessions(ada)) == 4


def test_session_saved_with_no_time_left_drops_its_entry(ada: User, r: redis.Redis) -> None:
    client = signed_in("Firefox")
    store = SessionStore(key_of(client))
    store.set_expiry(-1)
    store.save()
    assert r.keys("session:*") == []


def test_signed_out_without_flush_drops_its_entry(ada: User, r: redis.Redis) -> None:
    client = signed_in("Firefox")
    store = SessionStore(key_of(client))
    del store["_auth_user_id"]
    store.save()
    assert users.MARKER not in SessionStore(key_of(client)).load()
    assert r.keys("session:u:*") == []
    assert api_sessions(ada) == []


def test_cleared_and_saved_session_drops_its_entry(ada: User, r: redis.Redis) -> None:
    client = signed_in("Firefox")
    store = SessionStore(key_of(client))
    assert store["_auth_user_id"] == str(ada.pk)
    store.clear()
    store["theme"] = "dark"
    store.save()
    assert SessionStore(key_of(client)).load() == {"theme": "dark"}
    assert users.get_sessions(ada) == []
    assert r.keys("session:u:*") == []


def api_sessions(user: User) -> list[users.UserSession]:
    return users.get_sessions(user)


@pytest.fixture
def down(settings: Any) -> Iterator[None]:
    settings.SESSION_REDIS = session_redis(
        url=f"redis://127.0.0.1:{free_port()}/0",
        options={"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    )
    yield


def test_redis_down_is_reported_not_empty(api: Api, ada: User, down: None) -> None:
    with pytest.raises(SessionUnavailable):
        api.get_sessions(ada)
    with pytest.raises(SessionUnavailable):
        api.end_sessions(ada)
    with pytest.raises(SessionUnavailable):
        api.end_session(ada, "0" * 32)


def test_garbage_fields_are_never_taken_for_sessions(ada: User, r: redis.Redis) -> None:
    index = index_of(ada)
    r.hset(index, "not-a-digest", "9999999999999|1|1|{}")
    with override_settings(SESSION_REDIS=session_redis(max_sessions_per_user=1)):
        client = signed_in("Firefox")  # the cap drops the garbage field, sends it nowhere
    assert r.hkeys(index) == [digest_of(client).encode()]
    r.hset(index, "not-a-digest", "9999999999999|1|1|{}")
    assert users.end_sessions(ada) == 1
    assert r.exists(index) == 0


def test_signal_receivers_ignore_what_is_not_theirs(ada: User, r: redis.Redis) -> None:
    users.on_login(sender=User, request=None)  # a third party's signal without a request
    users.attach(_bare_request())
    with override_settings(SESSION_REDIS=session_redis(user_index=False)):
        client = signed_in("Firefox")
        ada.is_active = False
        ada.save()
        ada.delete()
    assert r.exists("session:" + digest_of(client)) == 1  # with the index off, nothing ended


def _bare_request() -> Any:
    from django.http import HttpRequest

    return HttpRequest()  # no session attribute: nothing to attach to


INDEX_ACL_RULES = ["+type", "+hset", "+hget", "+hgetall", "+hdel", "+hexists", "+pttl"]


@pytest.mark.single_only
def test_the_readme_acl_user_runs_the_index(ada: User, r: redis.Redis, redis_url: str) -> None:
    from urllib.parse import urlsplit

    from tests.test_faults import ACL_RULES

    parts = urlsplit(redis_url)
    url = parts._replace(netloc=f"indexer:s3cret@{parts.hostname}:{parts.port}").geturl()
    r.execute_command("ACL", "SETUSER", "indexer", "reset", *ACL_RULES, *INDEX_ACL_RULES)
    try:
        with override_settings(SESSION_REDIS=session_redis(url=url)):
            client = signed_in("Firefox")
            assert [s.user_agent for s in users.get_sessions(ada)] == ["Firefox"]
            assert users.end_sessions(ada) == 1
            assert whoami(client) == "anonymous"
        # Without the index's commands, a login is refused loudly, not half-indexed.
        r.execute_command("ACL", "SETUSER", "indexer", "-hset")
        with override_settings(SESSION_REDIS=session_redis(url=url)):
            assert browser("Firefox").get("/login/?username=ada").status_code == 503
            # The entry failed in the round trip where the SET NX went in: the
            # create fails all the same, and its new key reaches no one.
            with pytest.raises(SessionUnavailable, match="script"):
                new_session(ada.pk).create()
        assert users.get_sessions(ada) == []
    finally:
        r.execute_command("ACL", "DELUSER", "indexer")


def test_no_signed_in_session_is_ever_missing_from_the_index(r: redis.Redis) -> None:
    """Logins, refreshing requests, logouts and endings race; the invariant holds throughout."""
    import random
    import threading

    from django.contrib.sessions.backends.base import UpdateError as Interrupted

    uid = "1"
    errors: list[BaseException] = []
    stop = threading.Event()

    def device(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(25):
                try:
                    store = SessionStore()
                    store.cycle_key()  # what login() does to the session, then sets the user
                    store["_auth_user_id"] = uid
                    store.save()
                    for n in range(rng.randint(1, 4)):
                        request = SessionStore(store.session_key)
                        request["n"] = n
                        request.save()  # activity_interval 0: every save refreshes the entry
                except Interrupted:  # ended meanwhile: fine, as long as nothing comes back
                    continue
                if rng.random() < 0.4:
                    SessionStore(store.session_key).flush()
        except BaseException as exc:  # reported below
            errors.append(exc)

    def admin() -> None:
        try:
            for _ in range(15):  # then stops, so that the devices leave sessions behind
                if stop.is_set():
                    break
                users.end_sessions(uid)
                for session in users.get_sessions(uid):
                    users.end_session(uid, session.id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    with override_settings(SESSION_REDIS=session_redis(activity_interval=0)):
        threads = [threading.Thread(target=device, args=(n,)) for n in range(4)]
        ender = threading.Thread(target=admin)
        ender.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        ender.join()
    assert errors == []

    fields: list[bytes] = r.hkeys(index_of_uid(uid))  # type: ignore[assignment]
    indexed = {field.decode() for field in fields}
    signed_in_now = set()
    keys: list[bytes] = r.keys("session:*")  # type: ignore[assignment]
    for key in keys:
        if key.startswith(b"session:u:"):
            continue
        value: bytes = r.get(key) or b""  # type: ignore[assignment]
        fmt, _, body = codec.split(value)
        if codec.loads(codec.unpack_body(fmt, body)).get("_auth_user_id") == uid:
            signed_in_now.add(key.decode().removeprefix("session:"))
    assert signed_in_now  # some survived, from after the ending stopped
    assert signed_in_now <= indexed
    assert {s.id for s in users.get_sessions(uid)} == signed_in_now


def index_of_uid(uid: str) -> str:
    return users.index_key(conf.get_config().prefix, uid)


# The entry's format ------------------------------------------------------------------

# Real user agents: each must come back exactly, and with an IPv6 address still
# fit Redis's listpack limit (64 bytes), so that the user's hash stays small.
REAL_USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:135.0) Gecko/20100101 Firefox/135.0",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/131.0.0.0 Safari/537.36",
]
NOW_MS = 1_765_155_000_123
TWO_WEEKS_MS = 14 * 24 * 3600 * 1000


@pytest.mark.parametrize("agent", REAL_USER_AGENTS)
@pytest.mark.parametrize("ip", ["203.0.113.195", "2001:db8:85a3::8a2e:370:7334"])
def test_common_entries_round_trip_within_a_listpack_value(agent: str, ip: str) -> None:
    value = userindex.encode_entry(
        NOW_MS + TWO_WEEKS_MS + 60_000, NOW_MS, NOW_MS - 3_600_000, userindex.encode_meta(ip, agent)
    )
    # With IPv6, the longest (Chrome on iOS, Samsung Internet) go a little over.
    assert len(value) <= (64 if "." in ip else 72)
    assert userindex.decode_entry(value) == userindex.Entry(
        NOW_MS + TWO_WEEKS_MS + 60_000, NOW_MS, NOW_MS - 3_600_000, ip, agent
    )


@pytest.mark.parametrize(
    "ip",
    [
        "10.0.0.1",
        "::1",
        "::ffff:10.0.0.1",
        "fe80::1%eth0",  # a zone: not packed, kept as text
        "2001:DB8::1",  # not canonical: kept as written
        "010.0.0.1",
        "unknown",
        "a|b%c{d}",
        "\x01\x1f\x7f",
        "4AAAA",
        "=",
    ],
)
def test_any_ip_text_round_trips(ip: str) -> None:
    entry = userindex.decode_entry(userindex.encode_entry(2, 1, 0, userindex.encode_meta(ip, None)))
    assert entry == userindex.Entry(2, 1, 0, ip, None)


def test_text_round_trips_whatever_it_holds() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    # Every character, lone surrogates too (a WSGI header is Latin-1, a custom
    # client_ip function may return anything), as get_sessions reads them.
    texts = st.text(st.characters(codec="utf-8") | st.characters(categories=["Cs"]), max_size=300)
    stamps = st.integers(0, userindex.MAX_MS)

    @given(ip=texts, agent=texts, until=stamps, seen=stamps, created=stamps)
    def check(ip: str, agent: str, until: int, seen: int, created: int) -> None:
        value = userindex.encode_entry(until, seen, created, userindex.encode_meta(ip, agent))
        assert userindex.decode_entry(value) == userindex.Entry(
            until, seen, created, ip or None, agent or None
        )
        # Stored through redis-py as UTF-8, read back as get_sessions reads it.
        assert userindex.text(value.encode()) == value

    check()


def previous_release_entry(until: int, seen: int, created: int, meta: dict[str, str]) -> str:
    """An entry as the previous release wrote it."""
    return f"{until}|{seen}|{created}|" + json.dumps(meta, separators=(",", ":"))


def test_entries_of_the_previous_release_are_read_and_kept(ada: User, r: redis.Redis) -> None:
    client = signed_in("Firefox")
    digest, index = digest_of(client), index_of(ada)
    until = userindex.now_ms() + TWO_WEEKS_MS
    r.hset(
        index,
        digest,
        previous_release_entry(until, NOW_MS, NOW_MS - 5000, {"ip": "10.9.8.7", "ua": "Old/1.0"}),
    )
    (session,) = users.get_sessions(ada)
    assert (session.ip, session.user_agent) == ("10.9.8.7", "Old/1.0")
    assert (session.created.timestamp(), session.last_seen.timestamp()) == (
        (NOW_MS - 5000) / 1000,
        NOW_MS / 1000,
    )
    # A refresh without a request keeps the stored tail, in its JSON, and moves the stamps.
    with override_settings(SESSION_REDIS=session_redis(activity_interval=0)):
        SessionStore(key_of(client)).load()
    value = stored(r, index, digest)
    assert value.startswith(userindex.FORMAT) and value.endswith('{"ip":"10.9.8.7","ua":"Old/1.0"}')
    (session,) = users.get_sessions(ada)
    assert (session.ip, session.user_agent) == ("10.9.8.7", "Old/1.0")
    assert session.last_seen.timestamp() > NOW_MS / 1000
    # The next request writes the new format.
    with override_settings(SESSION_REDIS=session_redis(activity_interval=0)):
        whoami(client)
    value = stored(r, index, digest)
    meta = userindex.encode_meta("10.0.0.1", "Firefox")
    assert value == userindex.encode_entry(*_numbers(value), meta)


def stored(r: redis.Redis, index: str, digest: str) -> str:
    value = r.hget(index, digest)
    assert value is not None
    return userindex.text(value)


def _numbers(value: str) -> tuple[int, int, int]:
    entry = userindex.decode_entry(value)
    assert entry is not None
    return entry.until, entry.last_seen, entry.created


def test_the_script_prunes_and_evicts_entries_of_both_formats(ada: User, r: redis.Redis) -> None:
    with override_settings(SESSION_REDIS=session_redis(max_sessions_per_user=2)):
        oldest, newer = signed_in("Firefox"), signed_in("Chrome")
        index, now = index_of(ada), userindex.now_ms()
        # The oldest seen, in the previous format; an expired one of each format.
        r.hset(
            index,
            digest_of(oldest),
            previous_release_entry(now + TWO_WEEKS_MS, now - 9000, now - 9000, {}),
        )
        r.hset(index, "a" * 32, previous_release_entry(now - 3_600_000, now - 7_200_000, 1, {}))
        r.hset(index, "b" * 32, userindex.encode_entry(now - 3_600_000, now - 7_200_000, 1, "|"))
        signed_in("Edge")
        assert set(r.hkeys(index)) == {digest_of(newer).encode(), mine(r, index, "Edge")}
        assert whoami(oldest) == "anonymous"


def mine(r: redis.Redis, index: str, agent: str) -> bytes:
    for field, value in r.hgetall(index).items():
        entry = userindex.decode_entry(userindex.text(value))
        if entry is not None and entry.user_agent == agent:
            return field.encode() if isinstance(field, str) else field
    raise AssertionError(agent)


def test_a_typical_users_index_stays_a_listpack(ada: User, r: redis.Redis) -> None:
    signed_in(REAL_USER_AGENTS[7], ip="2001:db8:85a3::8a2e:370:7334")
    # Redis 6.2 calls the compact encoding "ziplist", 7.0 and later "listpack".
    assert r.object("encoding", index_of(ada)) in (b"listpack", b"ziplist")
    signed_in("x" * 300)  # a long user agent: still listed, in a bigger hash
    assert r.object("encoding", index_of(ada)) == b"hashtable"
    assert {s.user_agent for s in users.get_sessions(ada)} == {REAL_USER_AGENTS[7], "x" * 256}


@pytest.mark.parametrize(
    "value",
    [
        "A|1|1||",  # no last seen
        "Azz|-|0||",
        "AZZ|1|1||",  # upper case: not ours
        "A1|1|1",  # no tail
        "A" + "z" * 12 + "|1|1||",  # beyond any datetime
        "Azzzzzzzzzz|1|1||",
        "99999999999999999|1|1|{}",
        "A1|2|2||",  # created before 1970
        "A\u0661|1|1||",  # a non-ASCII digit
    ],
)
def test_entries_that_do_not_decode_are_pruned(
    api: Api, ada: User, r: redis.Redis, value: str
) -> None:
    client = signed_in("Firefox")
    r.hset(index_of(ada), digest_of(client), value)
    assert api.get_sessions(ada) == []
    assert r.hlen(index_of(ada)) == 0


@pytest.mark.parametrize(
    "tail",
    [
        "",
        "|",
        "x|",
        "4|",
        "4AAAA|",
        "6AAAA|",
        "4!!!!!!|",
        "=%FF|%FF",
        "=%|%",
        "||",
        "{|",
        "\x00|\x00\x7f",
    ],
)
def test_a_tail_that_does_not_decode_lists_with_safe_defaults(
    ada: User, r: redis.Redis, tail: str
) -> None:
    client = signed_in("Firefox")
    now = userindex.now_ms()
    r.hset(
        index_of(ada), digest_of(client), userindex.numbers_of(now + TWO_WEEKS_MS, now, now) + tail
    )
    (session,) = users.get_sessions(ada)
    assert session.id == digest_of(client)
    assert session.ip is None or isinstance(session.ip, str)
    assert session.user_agent is None or isinstance(session.user_agent, str)
    assert isinstance(session.device, str)
