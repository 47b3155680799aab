"""Where features met and broke "logout stays logout": one named test per seam.

Each test drives the real middleware or the store's public API, the way a
site does, with two features on at once.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator
from typing import Any

import django
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.base import UpdateError
from django.test import Client, override_settings
from django.utils import timezone

from django_redis_sessions import codec, conf, crypto, migration, signals, timeouts, users
from django_redis_sessions.session import SessionStore
from tests.conftest import session_redis
from tests.test_migration import KEYED, Old, OldDb, OldFile, _url, old_redis, old_redis_url
from tests.twins import Ops, session_keys

__all__ = ["old_redis", "old_redis_url"]  # fixtures this module borrows

COOKIE = settings.SESSION_COOKIE_NAME
pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(db: None) -> User:
    return User.objects.create_user("ada", password="pw")


def signed_in_data(user: User) -> dict[str, Any]:
    return {
        "_auth_user_id": str(user.pk),
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": user.get_session_auth_hash(),
    }


@pytest.fixture
def old_db(tmp_path: Any, old_redis: redis.Redis) -> Iterator[Old]:
    engine = OldDb(tmp_path, _url(old_redis))
    with override_settings(**engine.settings()):
        yield engine


def with_keys(old: Old, **keys: Any) -> Any:
    return override_settings(**old.settings(**keys))


def whoami(client: Client) -> bytes:
    return client.get("/whoami/").content


def browser_of(key: str) -> Client:
    client = Client()
    client.cookies[COOKIE] = key
    return client


def redis_key(key: str) -> str:
    return codec.redis_key("session:", key)


# The issue's own walk: an imported session, ended by every path --------------------


@pytest.mark.parametrize("end", ["end_sessions", "aend_sessions", "end_session"])
def test_ending_an_imported_session_is_final(old_db: Old, ada: User, r: Any, end: str) -> None:
    key = old_db.make(signed_in_data(ada))
    client = browser_of(key)
    assert whoami(client) == b"ada"
    if end == "end_session":
        assert users.end_session(ada, codec.digest(key)) is True
    else:
        ended = users.end_sessions(ada) if end == "end_sessions" else None
        if ended is None:
            from asgiref.sync import async_to_sync

            ended = async_to_sync(users.aend_sessions)(ada)
        assert ended == 1
    assert whoami(client) == b"anonymous"
    assert whoami(browser_of(key)) == b"anonymous"  # not re-imported
    assert users.get_sessions(ada) == []


def test_timeouts_end_an_imported_session_for_good(old_db: Old, ada: User, r: Any) -> None:
    with with_keys(old_db, idle_timeout=1):
        key = old_db.make(signed_in_data(ada))
        client = browser_of(key)
        assert whoami(client) == b"ada"
        time.sleep(1.3)  # the idle window passes: Redis drops the key
        assert whoami(client) == b"anonymous"
        assert whoami(browser_of(key)) == b"anonymous"


# Seam 1: the index and the migration -------------------------------------------------


def test_seam1_imported_session_is_indexed_on_first_request(old_db: Old, ada: User) -> None:
    key = old_db.make(signed_in_data(ada))
    assert whoami(browser_of(key)) == b"ada"  # the import's own request
    assert [s.id for s in users.get_sessions(ada)] == [codec.digest(key)]


def test_seam1_logout_while_migrating_is_not_listed(old_db: Old, ada: User) -> None:
    client = Client()
    client.get("/login/?username=ada")
    assert len(users.get_sessions(ada)) == 1
    client.get("/logout/")
    assert users.get_sessions(ada) == []


# Seam 2: a read-only request writes nothing the user can see ----------------------


@pytest.mark.parametrize("index", [True, False], ids=["index", "no-index"])
def test_seam2_read_only_request_keeps_ttl_and_sends_no_cookie(
    ada: User, r: Any, index: bool
) -> None:
    with override_settings(
        SESSION_REDIS=session_redis(user_index=index, activity_interval=0)
    ):  # every request is due a last_seen stamp
        client = Client()
        client.get("/login/?username=ada")
        (key,) = session_keys(r)
        r.pexpire(key, 100_000)
        seen = users.get_sessions(ada)[0].last_seen if index else timezone.now()
        time.sleep(0.01)
        response = client.get("/whoami/")
        assert response.content == b"ada"
        assert COOKIE not in response.cookies
        assert 0 < r.pttl(key) <= 100_000
        if index:
            assert users.get_sessions(ada)[0].last_seen > seen  # the stamp still moves


def age_to_1000_seconds_left(old: Old, key: str, old_redis: redis.Redis) -> None:
    """As if the session had been saved long ago: 1000 s left, no expiry of its own."""
    if isinstance(old, OldDb):
        old.expire_in(key, 1000)
    elif isinstance(old, OldFile):
        then = time.time() - (settings.SESSION_COOKIE_AGE - 1000)
        os.utime(os.path.join(old.tmp_path, COOKIE + key), (then, then))
    else:  # cache and 0.6.2: the key's own TTL
        names: list[bytes] = old_redis.keys("*")  # type: ignore[assignment]
        (name,) = [n for n in names if n.endswith(key.encode())]
        old_redis.expire(name, 1000)


@pytest.mark.parametrize("source", ["db", "cache", "file", "drs"])
def test_seam2_imported_sessions_keep_their_remaining_lifetime(
    source: str, ada: User, r: Any, tmp_path: Any, old_redis: redis.Redis
) -> None:
    old = KEYED[source](tmp_path, _url(old_redis))
    with override_settings(**old.settings(activity_interval=0)):
        key = old.make(signed_in_data(ada))
        age_to_1000_seconds_left(old, key, old_redis)
        client = browser_of(key)
        for _ in range(3):
            response = client.get("/whoami/")
            assert response.content == b"ada"
            assert 0 < r.pttl(redis_key(key)) <= 1_000_000


# Seam 3: an import is capped by the clocks at once ---------------------------------


@pytest.mark.parametrize("keys", [{"idle_timeout": 60}, {"absolute_timeout": 60}])
def test_seam3_imported_ttl_is_capped_by_the_timeouts(
    old_db: Old, ada: User, r: Any, keys: dict[str, Any]
) -> None:
    with with_keys(old_db, **keys):
        key = old_db.make(signed_in_data(ada), age=1000)
        assert whoami(browser_of(key)) == b"ada"
        assert 0 < r.pttl(redis_key(key)) <= 60_000


# Seam 4: the absolute deadline belongs to the sign-in --------------------------------


def test_seam4_cycle_key_keeps_the_absolute_deadline(ops: Ops, r: Any) -> None:
    with override_settings(SESSION_REDIS=session_redis(absolute_timeout=60)):
        store = SessionStore()
        ops.setitem(store, "_auth_user_id", "1")
        ops.save(store)
        anchor = ops.getitem(SessionStore(store.session_key), timeouts.ANCHOR)
        assert isinstance(anchor, int)
        time.sleep(0.05)
        loaded = SessionStore(store.session_key)
        ops.cycle_key(loaded)  # a periodic rotation: nobody signed in
        ops.save(loaded)
        assert ops.getitem(SessionStore(loaded.session_key), timeouts.ANCHOR) == anchor
        # A sign-in (another user id) starts a new clock.
        again = SessionStore(loaded.session_key)
        ops.setitem(again, "_auth_user_id", "2")
        ops.save(again)
        assert ops.getitem(SessionStore(again.session_key), timeouts.ANCHOR) > anchor


# Seam 5: a rotation racing an end does not bring the session back --------------------


@pytest.mark.parametrize("index", [True, False], ids=["index", "no-index"])
def test_seam5_cycle_key_racing_an_end_stays_ended(
    ops: Ops, ada: User, r: Any, index: bool
) -> None:
    with override_settings(SESSION_REDIS=session_redis(user_index=index)):
        store = SessionStore()
        for name, value in signed_in_data(ada).items():
            ops.setitem(store, name, value)
        ops.save(store)
        old_key = store.session_key
        assert old_key is not None
        loaded = SessionStore(old_key)
        ops.items(loaded)  # this request loaded the session ...
        if index:  # ... then another one ended it
            assert users.end_sessions(ada) == 1
        else:
            SessionStore(old_key).delete()
        ops.cycle_key(loaded)
        assert session_keys(r) == []
        assert loaded.session_key is None or not SessionStore().exists(loaded.session_key)
        if index:
            assert users.get_sessions(ada) == []


# The way back (write-back) under a timeout -------------------------------------------


def test_write_back_copy_never_outlives_ours_under_a_timeout(old_db: Old, ada: User) -> None:
    with with_keys(old_db, migrate_write_back=True, idle_timeout=1):
        key = old_db.make(signed_in_data(ada))
        client = browser_of(key)
        assert whoami(client) == b"ada"  # imported; the old row is the way back
        assert client.get("/counter/").content == b"1"  # a save: written back too
        assert old_db.has(key)
        time.sleep(1.3)  # the idle window passes: ours and the old copy are over
        assert whoami(client) == b"anonymous"
        assert whoami(browser_of(key)) == b"anonymous"


def test_an_import_whose_expiry_django_cannot_read_is_no_500(
    old_db: Old, ada: User, r: Any
) -> None:
    from django.contrib.sessions.backends.db import SessionStore as DbStore
    from django.contrib.sessions.models import Session

    with with_keys(old_db, migrate_write_back=True, idle_timeout=60):
        key = SessionStore()._get_new_session_key()
        data = {**signed_in_data(ada), "_session_expiry": "not a date"}
        expires = timezone.now() + datetime.timedelta(seconds=1000)
        Session.objects.create(
            session_key=key, session_data=DbStore().encode(data), expire_date=expires
        )
        assert whoami(browser_of(key)) == b"ada"
        # The unreadable expiry is dropped: the old row's own lifetime stands,
        # cut by the idle window; the row, the way back, expires with ours.
        assert 0 < r.pttl(redis_key(key)) <= 60_000
        assert Session.objects.get(session_key=key).expire_date < expires


def test_an_import_changed_by_its_first_request_gets_djangos_age(
    old_db: Old, ada: User, r: Any
) -> None:
    with with_keys(old_db):
        key = old_db.make(signed_in_data(ada))
        assert isinstance(old_db, OldDb)
        old_db.expire_in(key, 1000)
        response = browser_of(key).get("/counter/")
        # Django's rule: the expiry counts from the last modification.
        assert int(response.cookies[COOKIE]["max-age"]) == settings.SESSION_COOKIE_AGE
        assert r.pttl(redis_key(key)) > 1_000_000


# The one end path: every way a session ends ----------------------------------------


@pytest.fixture
def ended() -> Iterator[list[tuple[str, str]]]:
    sent: list[tuple[str, str]] = []

    def receiver(sender: Any, digest: str, reason: str, **kwargs: Any) -> None:
        sent.append((digest, reason))

    signals.session_ended.connect(receiver)
    yield sent
    signals.session_ended.disconnect(receiver)


def test_every_end_is_signalled_with_its_reason(
    ada: User, r: Any, ended: list[tuple[str, str]]
) -> None:
    with override_settings(SESSION_REDIS=session_redis(max_sessions_per_user=2)):
        first, second = Client(), Client()
        first.get("/counter/")
        old_key = first.cookies[COOKIE].value
        first.get("/login/?username=ada")  # a sign-in rotates the key
        assert ended == [(codec.digest(old_key), "cycled")]
        second.get("/login/?username=ada")
        Client().get("/login/?username=ada")  # a third: the least recently seen goes
        assert ended[-1] == (codec.digest(first.cookies[COOKIE].value), "evicted")
        users.end_sessions(ada, keep=second.cookies[COOKIE].value)
        assert ended[-1][1] == "ended"
        second_key = second.cookies[COOKIE].value
        second.get("/logout/")
        assert ended[-1] == (codec.digest(second_key), "deleted")


def test_ending_a_value_that_is_no_session_still_drops_its_entry(ada: User, r: Any) -> None:
    client = Client()
    client.get("/login/?username=ada")
    (key,) = session_keys(r)
    r.set(key, b"garbage")  # not ours to read: ended all the same
    assert users.end_sessions(ada) == 1
    assert session_keys(r) == [] and users.get_sessions(ada) == []
    # By key, from a store that never loaded it: read as it goes, owner unknown.
    r.set(redis_key("g" * 32), b"garbage")
    SessionStore().delete("g" * 32)
    assert session_keys(r) == []


def test_a_rotation_racing_an_end_forgets_the_sign_in(ops: Ops, ada: User, r: Any) -> None:
    with override_settings(SESSION_REDIS=session_redis(absolute_timeout=60)):
        store = SessionStore()
        ops.setitem(store, "_auth_user_id", str(ada.pk))
        ops.save(store)
        loaded = SessionStore(store.session_key)
        ops.items(loaded)
        users.end_sessions(ada)
        ops.cycle_key(loaded)
        assert session_keys(r) == [] and ops.get_absolute_remaining(loaded) is None


def test_an_import_already_past_its_deadline_stays_ended(old_db: Old, ada: User, r: Any) -> None:
    with with_keys(old_db, absolute_timeout=60, migrate_write_back=True):
        # A copy this engine wrote back, signed in 61 s ago by Redis's clock.
        seconds, _ = r.time()
        data = {**signed_in_data(ada), timeouts.ANCHOR: (int(seconds) - 61) * 1000}
        key = old_db.make(data)
        assert whoami(browser_of(key)) == b"anonymous"
        assert session_keys(r) == []
        assert whoami(browser_of(key)) == b"anonymous"


def test_an_import_is_not_written_back_to_where_it_came_from(
    old_db: Old, ada: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    with with_keys(old_db, migrate_write_back=True):
        writes: list[str] = []
        source = migration.source_for(conf.get_config())
        monkeypatch.setattr(source, "write", lambda key, *args: writes.append(key))
        key = old_db.make(signed_in_data(ada))
        client = browser_of(key)
        assert whoami(client) == b"ada"
        assert writes == []  # the old store has it already
        client.get("/counter/")
        assert writes == [key]  # a change goes back


def test_a_tombstone_outlives_the_old_copy(old_db: Old, ada: User, r: Any) -> None:
    three_weeks = 21 * 24 * 3600
    key = old_db.make({**signed_in_data(ada), "_session_expiry": three_weeks})
    assert whoami(browser_of(key)) == b"ada"
    assert users.end_sessions(ada) == 1  # by handle: the data is read as it goes
    assert r.get(redis_key(key)) == codec.TOMBSTONE
    assert r.pttl(redis_key(key)) > (three_weeks - 60) * 1000
    assert migration._age_ms({"_session_expiry": "2999-01-01T00:00:00"}) == 0  # naive: unknown


def test_an_encrypted_value_without_keys_is_refused() -> None:
    bare = crypto.Config(None, None, None, "x:")
    with pytest.raises(codec.CorruptSession, match="not set"):
        crypto.unpack(bare, "0" * 32, codec.ENCRYPTED, b"k1:" + b"0" * 40)


def test_a_stamp_that_would_pass_max_bytes_waits_for_a_save(ada: User, r: Any) -> None:
    data = {**signed_in_data(ada), "pad": "x" * 100}
    body = codec.dumps(data)
    session_key = "s" * 32
    with override_settings(SESSION_REDIS=session_redis(max_bytes=len(body) + 10)):
        value = codec.join(codec.PLAIN, b"1", body)
        r.set(redis_key(session_key), value, px=60_000)  # stored before the index
        loaded = SessionStore(session_key).load()  # no error, nothing too big written
        assert {k: v for k, v in loaded.items() if k != users.MARKER} == data
        assert r.get(redis_key(session_key)) == value
        assert [s.id for s in users.get_sessions(ada)] == [codec.digest(session_key)]


@pytest.mark.skipif(django.VERSION < (5, 0), reason="alogout/auser arrived in Django 5.0")
def test_the_async_paths_end_an_imported_session_for_good(old_db: Old, ada: User) -> None:
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    key = old_db.make(signed_in_data(ada))

    async def visit(url: str) -> bytes:
        client = AsyncClient()
        client.cookies[COOKIE] = key
        return (await client.get(url)).content

    assert async_to_sync(visit)("/awhoami/") == b"ada"  # imported on the event loop
    assert [s.id for s in async_to_sync(users.aget_sessions)(ada)] == [codec.digest(key)]
    assert async_to_sync(users.aend_session)(ada, codec.digest(key)) is True
    assert async_to_sync(visit)("/awhoami/") == b"anonymous"
    assert async_to_sync(users.aget_sessions)(ada) == []
    # A logout on the event loop, while migrating: gone from the index too.
    key = old_db.make(signed_in_data(ada))
    assert async_to_sync(visit)("/awhoami/") == b"ada"
    async_to_sync(visit)("/alogout/")
    assert async_to_sync(visit)("/awhoami/") == b"anonymous"
    assert async_to_sync(users.aget_sessions)(ada) == []


def test_a_deadline_met_in_flight_is_an_end_like_any_other(
    ops: Ops, ada: User, r: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed_out: list[str] = []

    def receiver(sender: Any, reason: str, **kwargs: Any) -> None:
        timed_out.append(reason)

    with override_settings(SESSION_REDIS=session_redis(absolute_timeout=60)):
        store = SessionStore()
        ops.setitem(store, "_auth_user_id", str(ada.pk))
        ops.save(store)
        assert len(users.get_sessions(ada)) == 1
        loaded = SessionStore(store.session_key)
        data = ops.items(loaded)
        loaded._session_cache[timeouts.ANCHOR] = data[timeouts.ANCHOR] - 61_000
        # As if the deadline passed between the TTL's computation and the script.
        monkeypatch.setattr(timeouts.Clock, "cap", lambda self, ttl, data: ttl)
        ops.setitem(loaded, "a", 1)
        signals.session_timed_out.connect(receiver)
        try:
            with pytest.raises(UpdateError):
                ops.save(loaded)
        finally:
            signals.session_timed_out.disconnect(receiver)
        assert timed_out == ["absolute"]
        assert session_keys(r) == [] and users.get_sessions(ada) == []
