"""Features that compose: logout stays logout, whatever is switched on.

Every pair of {migration (from the db engine and from the cache engine), the
per-user index, encryption, idle timeout, absolute timeout, write-back} meets
every way a session ends, through the real middleware, sync and async. After
the end, the old cookie gives an anonymous request, the session is not listed
among the user's sessions, and presenting the cookie again imports nothing,
even where the old store still holds the session.

Only public behaviour is used: requests through django.test.Client and
AsyncClient, the ``users`` API, the admin, model saves. Redis is read only to
count sessions and for its clock.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import import_module
from typing import Any

import django
import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.file import SessionStore as FileStore
from django.contrib.sessions.models import Session
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, modify_settings, override_settings
from django.urls import include, path
from django.utils import timezone

from django_redis_sessions import migration, users
from tests.conftest import session_redis
from tests.test_migration import old_redis, old_redis_url
from tests.twins import session_keys

__all__ = ["old_redis", "old_redis_url"]  # fixtures this module borrows

pytestmark = pytest.mark.django_db

COOKIE = django_settings.SESSION_COOKIE_NAME
AGE = django_settings.SESSION_COOKIE_AGE
KEY = "k1:" + base64.urlsafe_b64encode(bytes(range(32))).decode()
# alogin, alogout and request.auser() arrived in Django 5.0; before, the async
# requests run the sync views behind the async middleware.
ASYNC_VIEWS = django.VERSION >= (5, 0)
# Timeouts of the cases that wait for them (seconds): the smallest that keep a
# sign-in and its first request well inside them on a loaded machine.
SHORT = 2
# Timeouts of the cases where they are on but must not end the session.
LONG = 600
MARGIN_MS = 50


# Views of this module: the site's, plus flush() --------------------------------------


def flush_view(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponse("flushed")


async def aflush_view(request: HttpRequest) -> HttpResponse:
    await request.session.aflush()
    return HttpResponse("flushed")


def cycle_view(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()
    return HttpResponse("cycled")


async def acycle_view(request: HttpRequest) -> HttpResponse:
    await request.session.acycle_key()
    return HttpResponse("cycled")


urlpatterns = [
    path("flush/", flush_view),
    path("aflush/", aflush_view),
    path("cycle/", cycle_view),
    path("acycle/", acycle_view),
    path("", include("tests.urls")),
]


# The matrix ---------------------------------------------------------------------------

FEATURES = ("migration", "index", "encryption", "idle", "absolute", "write_back")
SOURCES = {"db": migration.DB, "cache": migration.CACHE}

LOGOUT = "logout"
FLUSH = "flush"
CYCLE_KEY = "cycle_key"
LOGIN_ROTATION = "login_rotation"
END_SESSION = "end_session"
END_SESSIONS = "end_sessions"
OTHER_DEVICES = "other_devices"
ADMIN = "admin"
DEACTIVATION = "deactivation"
DELETION = "deletion"
EVICTION = "eviction"
IDLE = "idle_timeout"
ABSOLUTE = "absolute_timeout"
ENDINGS = (
    LOGOUT, FLUSH, CYCLE_KEY, LOGIN_ROTATION, END_SESSION, END_SESSIONS, OTHER_DEVICES, ADMIN,
    DEACTIVATION, DELETION, EVICTION, IDLE, ABSOLUTE,
)  # fmt: skip
# What an ending needs switched on to exist at all.
NEEDS = {
    END_SESSION: {"index"},
    END_SESSIONS: {"index"},
    OTHER_DEVICES: {"index"},
    ADMIN: {"index"},
    DEACTIVATION: {"index"},
    DELETION: {"index"},
    EVICTION: {"index"},
    IDLE: {"idle"},
    ABSOLUTE: {"absolute"},
}
WAITS = {IDLE: "idle", ABSOLUTE: "absolute"}


@dataclass(frozen=True)
class World:
    """The features switched on, and the old store sessions come from (if any)."""

    features: frozenset[str]
    source: str | None
    ending: str

    @property
    def id(self) -> str:
        names = sorted(self.features - {"migration"})
        return "+".join(([self.source] if self.source else []) + names) or "plain"

    def session_redis(self) -> dict[str, Any]:
        keys: dict[str, Any] = {"user_index": "index" in self.features}
        if self.source is not None:
            keys["migrate_from"] = SOURCES[self.source]
            keys["migrate_write_back"] = "write_back" in self.features
        if "encryption" in self.features:
            keys["encryption_keys"] = [KEY]
        if "idle" in self.features:
            keys["idle_timeout"] = SHORT if self.ending == IDLE else LONG
        if "absolute" in self.features:
            keys["absolute_timeout"] = SHORT if self.ending == ABSOLUTE else LONG
        if self.ending == EVICTION:
            keys["max_sessions_per_user"] = 1
        return session_redis(**keys)


def _worlds() -> list[World]:
    """Each pair of features with each ending, less the cases that come out the same.

    An ending adds what it needs (the index to list and end sessions, its own
    timeout); write-back needs an old store (the db). The endings that wait
    for a timeout run with the pairs holding that timeout, so the wall time
    stays short.
    """
    worlds: dict[tuple[frozenset[str], str | None, str], World] = {}
    for ending in ENDINGS:
        for pair in itertools.combinations(FEATURES, 2):
            if ending in WAITS and WAITS[ending] not in pair:
                continue
            features = frozenset(pair) | NEEDS.get(ending, set())
            sources: tuple[str | None, ...] = (None,)
            if "migration" in features:
                sources = tuple(SOURCES)
            elif "write_back" in features:
                features |= {"migration"}
                sources = ("db",)
            for source in sources:
                world = World(features, source, ending)
                worlds.setdefault((features, source, ending), world)
    return list(worlds.values())


WORLDS = _worlds()


# Old stores ---------------------------------------------------------------------------


def old_settings(settings: Any, old_redis_url: str, session_redis: dict[str, Any]) -> None:
    """SESSION_REDIS and what its old store needs (the cache on a Redis of its own)."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "sessions": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": old_redis_url,
        },
    }
    settings.SESSION_CACHE_ALIAS = "sessions"
    settings.SESSION_REDIS = session_redis


def signed_in_data(user: User) -> dict[str, Any]:
    """What ``login()`` stores: the session of a signed-in user, in any engine."""
    return {
        SESSION_KEY: str(user.pk),
        BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
        HASH_SESSION_KEY: user.get_session_auth_hash(),
    }


def old_session(engine: str, user: User) -> str:
    """A signed-in session saved by the old engine's own code; its cookie."""
    store = import_module(engine).SessionStore()
    store.update(signed_in_data(user))
    store.save()
    key: str = store.session_key
    return key


# Browsers --------------------------------------------------------------------------------


class Browser:
    """One browser: a cookie, and requests through the real middleware (sync or async)."""

    def __init__(self, is_async: bool, cookie: str | None = None, agent: str = "Firefox") -> None:
        self.is_async = is_async
        self.cookie = cookie
        self.agent = agent

    def request(self, method: str, url: str, data: dict[str, Any] | None = None) -> Any:
        client: Any = AsyncClient() if self.is_async else Client()
        if self.cookie:
            client.cookies[COOKIE] = self.cookie
        call = getattr(client, method)
        kwargs = {"HTTP_USER_AGENT": self.agent}
        response = (
            async_to_sync(call)(url, data, **kwargs) if self.is_async else call(url, data, **kwargs)
        )
        morsel = response.cookies.get(COOKIE)
        if morsel is not None:
            self.cookie = morsel.value or None
        return response

    def get(self, url: str) -> Any:
        return self.request("get", url)

    def view(self, name: str) -> str:
        """The URL of a view of tests/views.py, its async twin in async mode."""
        return f"/a{name}/" if self.is_async and ASYNC_VIEWS else f"/{name}/"

    def whoami(self) -> str:
        response = self.get(self.view("whoami"))
        assert response.status_code == 200, response
        return str(response.content.decode())

    def login(self, username: str) -> None:
        assert self.get(self.view("login") + f"?username={username}").content == b"logged in"


def redis_now_ms(r: Any) -> int:
    seconds, microseconds = r.time()
    return int(seconds) * 1000 + int(microseconds) // 1000


def wait_on_redis_clock(r: Any, until_ms: int) -> None:
    """Sleep until Redis's own clock reads ``until_ms`` (never the app server's)."""
    while (left := until_ms - redis_now_ms(r)) > 0:
        time.sleep(left / 1000 + 0.005)


def listed(user: Any, cookie: str | None, is_async: bool) -> bool:
    """Whether the user's sessions list the session of ``cookie``."""
    if is_async:
        sessions = async_to_sync(users.aget_sessions)(user, cookie)
    else:
        sessions = users.get_sessions(user, cookie)
    return any(session.current for session in sessions)


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", password="pw")


@dataclass
class Case:
    world: World
    is_async: bool
    r: Any
    alice: User
    uid: int = field(init=False)

    def __post_init__(self) -> None:
        self.uid = self.alice.pk

    def browser(self, cookie: str | None = None, agent: str = "Firefox") -> Browser:
        return Browser(self.is_async, cookie, agent)

    def sign_in(self, browser: Browser) -> int:
        """Alice signs in: through the old store when migrating; Redis's clock once she has."""
        if self.world.source is not None:
            browser.cookie = old_session(SOURCES[self.world.source], self.alice)
        else:
            browser.login("alice")
        assert browser.whoami() == "alice"  # an import happens here
        # A second request: an imported session's first save (its index entry)
        # may come only then (test_an_imported_session_is_listed_at_once).
        assert browser.whoami() == "alice"
        after = redis_now_ms(self.r)
        if "index" in self.world.features:
            assert listed(self.uid, browser.cookie, self.is_async)
        return after

    def load(self, cookie: str) -> dict[str, Any]:
        """What the engine serves for ``cookie`` now (an import, if it still makes one)."""
        store = import_module(django_settings.SESSION_ENGINE).SessionStore(cookie)
        data: dict[str, Any] = self.call(store.load, store.aload)
        return data

    def call(self, sync: Callable[..., Any], asynchronous: Callable[..., Any], *args: Any) -> Any:
        return async_to_sync(asynchronous)(*args) if self.is_async else sync(*args)


@pytest.fixture(params=WORLDS, ids=lambda world: f"{world.ending}-{world.id}")
def world(
    request: pytest.FixtureRequest, settings: Any, old_redis: redis.Redis, old_redis_url: str
) -> World:
    world: World = request.param
    old_settings(settings, old_redis_url, world.session_redis())
    settings.ROOT_URLCONF = __name__
    return world


@pytest.fixture(params=["sync", "async"])
def is_async(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "async")


def test_an_ended_session_stays_ended(world: World, is_async: bool, r: Any, alice: User) -> None:
    case = Case(world, is_async, r, alice)
    if world.ending == LOGIN_ROTATION:
        login_rotates_the_key(case)
        return
    device = case.browser()
    signed_in_at = case.sign_in(device)
    cookie = device.cookie
    assert cookie is not None
    end(case, device, signed_in_at)
    # The old cookie, as a replayed request or another tab would present it.
    replay = case.browser(cookie)
    assert replay.whoami() == "anonymous"
    assert replay.whoami() == "anonymous"
    assert SESSION_KEY not in case.load(cookie), "presenting the old cookie imported a session"
    assert not listed(case.uid, cookie, is_async)


def end(case: Case, device: Browser, signed_in_at: int) -> None:
    """End the session of ``device`` the way ``case`` says."""
    ending, alice = case.world.ending, case.alice
    if ending == LOGOUT:
        assert device.get(device.view("logout")).content == b"logged out"
    elif ending == FLUSH:
        assert device.get("/aflush/" if case.is_async else "/flush/").content == b"flushed"
    elif ending == CYCLE_KEY:
        old = device.cookie
        assert device.get("/acycle/" if case.is_async else "/cycle/").content == b"cycled"
        assert device.cookie != old and device.whoami() == "alice"
    elif ending == END_SESSION:
        (mine,) = [s.id for s in users.get_sessions(case.uid, current=device.cookie) if s.current]
        assert case.call(users.end_session, users.aend_session, alice, mine) is True
    elif ending == END_SESSIONS:
        assert case.call(users.end_sessions, users.aend_sessions, alice) == 1
    elif ending == OTHER_DEVICES:
        here = case.browser(agent="Chrome")
        here.login("alice")
        if case.is_async:
            assert async_to_sync(users.aend_sessions)(alice, here.cookie) == 1
        else:
            response = here.request("post", "/account/sessions/others/end/")
            assert response.status_code == 302
        assert here.whoami() == "alice"
    elif ending == ADMIN:
        end_through_the_admin(case)
    elif ending == DEACTIVATION:
        alice.is_active = False
        case.call(alice.save, alice.asave)
    elif ending == DELETION:
        case.call(alice.delete, alice.adelete)
    elif ending == EVICTION:
        newer = case.browser(agent="Chrome")
        newer.login("alice")  # one session per user: the older one goes
        assert newer.whoami() == "alice"
    else:  # a timeout: wait for it on Redis's clock, from the last moment it could start
        assert ending in WAITS
        last = redis_now_ms(case.r) if ending == IDLE else signed_in_at
        wait_on_redis_clock(case.r, last + SHORT * 1000 + MARGIN_MS)


def login_rotates_the_key(case: Case) -> None:
    """An anonymous session signs in: login() moves it to a new key; the old one is dead."""
    device = case.browser()
    if case.world.source is not None:
        engine = SOURCES[case.world.source]
        store = import_module(engine).SessionStore()
        store["cart"] = "book"
        store.save()
        device.cookie = store.session_key
    else:
        device.get("/set/cart/book/")
    assert device.get(device.view("get")).json()["cart"] == "book"
    old = device.cookie
    assert old is not None
    device.login("alice")
    assert device.cookie != old and device.whoami() == "alice"
    replay = case.browser(old)
    assert "cart" not in replay.get(replay.view("get")).json()
    assert replay.whoami() == "anonymous"
    assert "cart" not in case.load(old), "presenting the old cookie imported a session"


def end_through_the_admin(case: Case) -> None:
    User.objects.create_superuser("root", password="pw")
    with (
        modify_settings(INSTALLED_APPS={"append": "django.contrib.admin"}),
        override_settings(ROOT_URLCONF="tests.admin_urls"),
    ):
        admin = case.browser(agent="Safari")
        admin.login("root")
        response = admin.request(
            "post",
            "/admin/auth/user/",
            {"action": "end_all_sessions", "_selected_action": [case.uid]},
        )
        assert response.status_code == 302


def test_the_matrix_covers_every_pair_with_every_ending() -> None:
    for ending in ENDINGS:
        for pair in itertools.combinations(FEATURES, 2):
            if ending in WAITS and WAITS[ending] not in pair:
                continue
            assert any(w.ending == ending and set(pair) <= w.features for w in WORLDS), (
                ending,
                pair,
            )
    for ending in ENDINGS:
        for source in SOURCES:
            assert any(w.ending == ending and w.source == source for w in WORLDS)


@pytest.mark.parametrize("source", list(SOURCES))
def test_an_imported_session_is_listed_at_once(
    source: str, is_async: bool, settings: Any, old_redis_url: str, alice: User
) -> None:
    old_settings(settings, old_redis_url, session_redis(migrate_from=SOURCES[source]))
    device = Browser(is_async, old_session(SOURCES[source], alice))
    assert device.whoami() == "alice"
    # Else "end all", eviction and deactivation miss a session used once since the switch.
    assert listed(alice.pk, device.cookie, is_async)


# A read-only request ---------------------------------------------------------------------


@pytest.mark.parametrize("index", ["off", "on", "on-stamp-due"])
def test_a_read_only_request_changes_no_ttl_and_sends_no_cookie(
    index: str, is_async: bool, settings: Any, r: Any, alice: User
) -> None:
    settings.SESSION_REDIS = session_redis(
        user_index=index != "off", activity_interval=1 if index == "on-stamp-due" else 60
    )
    device = Browser(is_async)
    device.login("alice")
    (key,) = session_keys(r)
    if index == "on-stamp-due":
        time.sleep(1.1)  # past activity_interval: the index's last_seen is due
    before = r.pttl(key)
    for url in (device.view("whoami"), device.view("get")):
        response = device.get(url)
        assert response.status_code == 200
        assert COOKIE not in response.cookies, f"{url} sent Set-Cookie"
    assert session_keys(r) == [key]
    assert r.pttl(key) <= before, "a read-only request moved the session's expiry"


# Imported sessions keep their remaining lifetime -------------------------------------------

LEFT = 500  # seconds the old store still gives the session


def aged_db(user: User, old_redis: redis.Redis) -> str:
    key = old_session(migration.DB, user)
    Session.objects.filter(session_key=key).update(
        expire_date=timezone.now() + timedelta(seconds=LEFT)
    )
    return key


def aged_cache(user: User, old_redis: redis.Redis) -> str:
    key = old_session(migration.CACHE, user)
    (name,) = old_redis.keys("*" + key)
    old_redis.expire(name, LEFT)
    return key


def aged_file(user: User, old_redis: redis.Redis) -> str:
    import os

    key = old_session(migration.FILE, user)
    path = os.path.join(str(django_settings.SESSION_FILE_PATH), COOKIE + key)
    then = time.time() - (AGE - LEFT)
    os.utime(path, (then, then))
    return key


def aged_signed_cookie(user: User, old_redis: redis.Redis) -> str:
    class SignedEarlier(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - (AGE - LEFT))

    signer = SignedEarlier(salt=migration.SIGNED_COOKIES_SALT)
    return signer.sign_object(
        signed_in_data(user), serializer=signing.JSONSerializer, compress=True
    )


def aged_drs(user: User, old_redis: redis.Redis) -> str:
    # What 0.6.2's save() wrote: SETEX <prefix>:<key> <age> <signed data>.
    value = signing.dumps(signed_in_data(user), salt=migration.SESSION_SALT, compress=True)
    key = "a" * 32
    old_redis.set(f"drs:{key}", value, ex=LEFT)
    return key


AGED = {
    "db": (migration.DB, aged_db),
    "cache": (migration.CACHE, aged_cache),
    "file": (migration.FILE, aged_file),
    "signed_cookies": (migration.SIGNED_COOKIES, aged_signed_cookie),
    "0.6.2": (migration.DRS, aged_drs),
}


@pytest.mark.parametrize("index", ["off", "on"])
@pytest.mark.parametrize("source", list(AGED))
def test_imported_sessions_keep_their_remaining_lifetime(
    source: str,
    index: str,
    is_async: bool,
    settings: Any,
    r: Any,
    old_redis: redis.Redis,
    old_redis_url: str,
    alice: User,
    tmp_path: Any,
) -> None:
    engine, make = AGED[source]
    keys: dict[str, Any] = {"migrate_from": engine, "user_index": index == "on"}
    if engine == migration.DRS:
        keys["migrate_from_options"] = {"url": old_redis_url, "prefix": "drs"}
    old_settings(settings, old_redis_url, session_redis(**keys))
    if "_storage_path" in vars(FileStore):  # the file engine keeps the first path it saw
        delattr(FileStore, "_storage_path")
    settings.SESSION_FILE_PATH = str(tmp_path)
    device = Browser(is_async, make(alice, old_redis))
    for _ in range(2):
        response = device.get(device.view("whoami"))
        assert response.content == b"alice"
        morsel = response.cookies.get(COOKIE)
        if morsel is not None and morsel.value:
            assert int(morsel["max-age"]) <= LEFT, "the cookie outlives the old session"
        (key,) = session_keys(r)
        assert (LEFT - 60) * 1000 < r.pttl(key) <= LEFT * 1000, "the lifetime changed"
    for session in users.get_sessions(alice):
        assert session.expires is not None
        assert session.expires <= timezone.now() + timedelta(seconds=LEFT)
