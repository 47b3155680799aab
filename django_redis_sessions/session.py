"""The session engine: ``SESSION_ENGINE = "django_redis_sessions.session"``.

Every storage operation is written once, as a generator that yields Redis
commands and receives their replies; ``run`` drives it with the sync client and
``arun`` with the event loop's asyncio client, so both paths share every rule.

This module is the storage contract alone: it imports no feature. Features plug
in at the extension points of ``hooks`` (a codec, a clock, layers), filled once
per configuration by ``plan``. Ending a session has one path, ``_end``, that
every caller takes (logout, ``flush``, the old key of ``cycle_key``, the user
index's ends, eviction, a timeout, a save past its expiry): it removes the key
(or leaves a tombstone when a layer asks) and runs every layer's part.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Generator
from datetime import datetime
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.base import (
    VALID_KEY_CHARS,
    CreateError,
    SessionBase,
    UpdateError,
)
from django.contrib.sessions.serializers import JSONSerializer
from django.utils.crypto import get_random_string

from django_redis_sessions import codec, conf, hooks, plan, scripts, signals
from django_redis_sessions.compat import AsyncSessionAPI
from django_redis_sessions.driver import Command, arun, run
from django_redis_sessions.exceptions import SessionTooLarge, SessionUnavailable

T = TypeVar("T")
Steps = Generator[Command, Any, T]

suspicious_logger = logging.getLogger("django.security.SuspiciousSession")
logger = logging.getLogger("django_redis_sessions")

CREATE_ATTEMPTS = 10
# Redis refuses expiries past the year 292 million; a century is forever enough.
MAX_TTL_MS = 100 * 365 * 24 * 3600 * 1000
MAX_TTL_S = MAX_TTL_MS // 1000


class SessionStore(AsyncSessionAPI, SessionBase):
    """Sessions as one JSON string per Redis key, written atomically."""

    # The state of the stored session as this instance last read or wrote it:
    # its version and JSON body (None when unknown), and whether clear() has
    # discarded it since.
    _stored_version: bytes | None = None
    _stored_body: bytes | None = None
    # The whole value as stored (header and sealed or compressed body): what a
    # native compare-and-set (SET ... IFEQ) expects to find.
    _stored_value: bytes | None = None
    _cleared: bool = False
    # Set when this request imported the session (a migration): until when
    # (time.monotonic()) what the old store had left of it lasts.
    _imported_until: float | None = None
    _read_only: bool = False
    _unavailable: SessionUnavailable | None = None
    _digest_cache: tuple[str, str] | None = None
    # The stored value is not as this config writes it (plaintext, or an older
    # encryption key): the next save rewrites it even if the data is unchanged.
    _reseal: bool = False
    # With a layer that answers misses (a migration): the cookie, until it was asked.
    _unasked_cookie: str | None = None
    _scratch: dict[str, Any] | None = None

    # SessionBase.__init__ would import SESSION_SERIALIZER on every request; this
    # engine always stores JSON, so the class attribute stands in for it.
    serializer = JSONSerializer

    def __init__(self, session_key: str | None = None) -> None:
        self._session_key = session_key
        self.accessed = False
        self.modified = False
        self._plan = active = plan.get_plan()
        self._config = active.config
        self._codec = active.codec
        self._clock: hooks.Clock | None = active.clock() if active.clock is not None else None
        if active.missers and isinstance(session_key, str):
            self._unasked_cookie = session_key

    # Keys -------------------------------------------------------------------

    # Django's rule (8+ characters) within codec's bounds; anything else is no
    # session and reaches Redis in no command. Checked on every request: no wrapper.
    _validate_session_key = staticmethod(codec.is_valid_session_key)

    def _get_new_session_key(self) -> str:
        # Uniqueness is enforced by SET NX in create(), not by an EXISTS round trip.
        return get_random_string(32, VALID_KEY_CHARS)

    def _redis_key(self, session_key: str) -> str:
        return self._config.prefix + self._digest_of(session_key)

    def _digest_of(self, session_key: str) -> str:
        # A request asks for the same digest several times (load, save, signals).
        cached = self._digest_cache
        if cached is None or cached[0] != session_key:
            cached = self._digest_cache = (session_key, codec.digest(session_key))
        return cached[1]

    # Public API -------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        return self._drive("load", self._load_or_fallback())

    async def aload(self) -> dict[str, Any]:
        return await self._adrive("load", self._load_or_fallback())

    def exists(self, session_key: str | None) -> bool:
        return self._drive("exists", self._exists(session_key))

    async def aexists(self, session_key: str | None) -> bool:
        return await self._adrive("exists", self._exists(session_key))

    def create(self) -> None:
        self._drive("create", self._create())

    async def acreate(self) -> None:
        await self._adrive("create", self._create())

    def save(self, must_create: bool = False) -> None:
        self._drive("save", self._save(must_create))

    async def asave(self, must_create: bool = False) -> None:
        await self._adrive("save", self._save(must_create))

    def delete(self, session_key: str | None = None) -> None:
        self._drive("delete", self._delete(session_key))

    async def adelete(self, session_key: str | None = None) -> None:
        await self._adrive("delete", self._delete(session_key))

    def clear(self) -> None:
        super().clear()
        self._cleared = True

    def flush(self) -> None:
        super().flush()
        if self._clock is not None:
            self._clock.signed_out()

    async def aflush(self) -> None:
        await super().aflush()
        if self._clock is not None:
            self._clock.signed_out()

    # A rotation keeps the sign-in (and its absolute deadline). Its old key goes
    # through the one end path; if it was already gone, the session was ended
    # while this request held it, and the new key must not bring it back.

    def cycle_key(self) -> None:
        data = self._get_session()
        key = self.session_key
        self.create()
        self._session_cache = data
        if key:
            self._drive("delete", self._retire(key, data))

    async def acycle_key(self) -> None:
        data = await self._aget_session()
        key = self.session_key
        await self.acreate()
        self._session_cache = data
        if key:
            await self._adrive("delete", self._retire(key, data))

    # Timeouts (see ``timeouts``): seconds left, or None when the clock is off.

    def _loaded(self) -> dict[str, Any]:
        data: dict[str, Any] = cast(Any, self)._get_session()  # untyped in django-stubs
        return data

    async def _aloaded(self) -> dict[str, Any]:
        data: dict[str, Any] = await cast(Any, self)._aget_session()
        return data

    def get_idle_remaining(self) -> int | None:
        """Seconds this session lasts if no further request uses it."""
        data = self._loaded()
        return self._clock.idle_remaining(self, data) if self._clock else None

    async def aget_idle_remaining(self) -> int | None:
        """The async twin of :meth:`get_idle_remaining`."""
        data = await self._aloaded()
        return self._clock.idle_remaining(self, data) if self._clock else None

    def get_absolute_remaining(self) -> int | None:
        """Seconds until the absolute deadline, whatever the activity (None: no deadline)."""
        data = self._loaded()
        return self._clock.absolute_remaining(data) if self._clock else None

    async def aget_absolute_remaining(self) -> int | None:
        """The async twin of :meth:`get_absolute_remaining`."""
        data = await self._aloaded()
        return self._clock.absolute_remaining(data) if self._clock else None

    def get_expiry_age(self, **kwargs: Any) -> int:
        """Django's age, never past the session's absolute deadline (``absolute_timeout``)
        nor, for a session imported by this request and unchanged since, past what
        the old store had left of it."""
        age: int
        if kwargs or self.get("_session_expiry"):
            age = super().get_expiry_age(**kwargs)
            if "expiry" in kwargs:
                return age
        else:  # Django's answer (the cookie age) without its clock read
            age = self.get_session_cookie_age()
        age = self._imported_age(age)
        return age if self._clock is None else self._clock.cap_age(age, self._loaded())

    async def aget_expiry_age(self, **kwargs: Any) -> int:
        """The async twin of :meth:`get_expiry_age`."""
        age: int
        if kwargs or await self.aget("_session_expiry"):
            age = await super().aget_expiry_age(**kwargs)
            if "expiry" in kwargs:
                return age
        else:  # Django's answer (the cookie age) without its clock read
            age = self.get_session_cookie_age()
        age = self._imported_age(age)
        return age if self._clock is None else self._clock.cap_age(age, await self._aloaded())

    def _imported_age(self, age: int) -> int:
        until = self._imported_until
        if until is None:
            return age
        data = getattr(self, "_session_cache", None)
        if data is None or codec.dumps(data) != self._stored_body:
            return age  # changed since: Django's age counts from this modification
        return min(age, max(0, math.ceil(until - time.monotonic())))

    def get_expiry_date(self, **kwargs: Any) -> datetime:
        """Django's date, never past the session's absolute deadline (``absolute_timeout``)."""
        date: datetime = super().get_expiry_date(**kwargs)
        if self._clock is None or "expiry" in kwargs:
            return date
        return self._clock.cap_date(date, self._loaded())

    async def aget_expiry_date(self, **kwargs: Any) -> datetime:
        date: datetime = await super().aget_expiry_date(**kwargs)
        if self._clock is None or "expiry" in kwargs:
            return date
        return self._clock.cap_date(date, await self._aloaded())

    @classmethod
    def clear_expired(cls) -> None:
        """Redis expires every session key itself (its TTL); an old store is pruned."""
        for layer in plan.get_plan().expirers:
            layer.clear_expired()

    @classmethod
    async def aclear_expired(cls) -> None:
        """Redis expires every session key itself (its TTL); an old store is pruned."""
        if plan.get_plan().expirers:
            await sync_to_async(cls.clear_expired)()

    @property
    def unavailable(self) -> SessionUnavailable | None:
        """The failure this session met, if Redis could not serve it."""
        return self._unavailable

    # What layers may use (``hooks.Store``) ---------------------------------------

    @property
    def config(self) -> conf.Config:
        return self._config

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def scratch(self) -> dict[str, Any]:
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = {}
        return scratch

    @property
    def has_scratch(self) -> bool:
        return self._scratch is not None

    def digest_of(self, session_key: str) -> str:
        return self._digest_of(session_key)

    def restamp(self, data: dict[str, Any]) -> Steps[bool]:
        session_key, version = self.session_key, self._stored_version
        assert session_key is not None and version is not None, "only a loaded session"
        body = codec.dumps(data)
        limit = self._config.max_bytes
        if limit is not None and len(body) > limit:
            return True  # the stamp waits for a save, which reports the size
        fmt, stored = self._pack(body)
        value = codec.join(fmt, version, stored)
        reply = yield (
            scripts.EVALSHA,
            scripts.RESEAL,
            self._redis_key(session_key),
            version,
            value,
        )
        if reply == 1:
            self._stored_body, self._stored_value = body, value
        return bool(reply != 0)

    def adopt(self, found: hooks.Found) -> Steps[bool | None]:
        return self._adopt(found)

    def end_steps(self, ending: hooks.Ending) -> Steps[bool]:
        return self._end(ending)

    # Drivers and the failure policy -----------------------------------------

    # Django loads only a session with a key; a layer answering misses (a
    # migration) may still know a cookie that is no key of ours (a signed cookie).

    def _get_session(self, no_load: bool = False) -> dict[str, Any]:
        cached: dict[str, Any] | None = getattr(self, "_session_cache", None)
        if cached is not None:  # loaded already, on every access: Django's answer
            self.accessed = True
            return cached
        if self._unasked_cookie is not None and self._pending_legacy(no_load):
            self._session_cache = self.load()
        data: dict[str, Any] = super()._get_session(no_load)  # type: ignore[misc]
        return data

    _session = property(_get_session)

    async def _aget_session(self, no_load: bool = False) -> dict[str, Any]:
        cached: dict[str, Any] | None = getattr(self, "_session_cache", None)
        if cached is not None:
            self.accessed = True
            return cached
        if self._unasked_cookie is not None and self._pending_legacy(no_load):
            self._session_cache = await self.aload()
        data: dict[str, Any] = await super()._aget_session(no_load)  # type: ignore[misc]
        return data

    def _pending_legacy(self, no_load: bool) -> bool:
        return (
            self._unasked_cookie is not None
            and not no_load
            and self.session_key is None
            and not hasattr(self, "_session_cache")
        )

    def _drive(self, operation: str, steps: Steps[T]) -> T:
        started = time.perf_counter()
        try:
            result = run(steps)
        except BaseException as exc:
            self._finished(operation, started, exc)
            raise
        if signals.operation_completed.receivers:  # else a success has nothing to report
            self._finished(operation, started, None)
        return result

    async def _adrive(self, operation: str, steps: Steps[T]) -> T:
        started = time.perf_counter()
        try:
            result = await arun(steps)
        except BaseException as exc:
            self._finished(operation, started, exc)
            raise
        if signals.operation_completed.receivers:  # else a success has nothing to report
            self._finished(operation, started, None)
        return result

    def _finished(self, operation: str, started: float, exc: BaseException | None) -> None:
        if isinstance(exc, SessionUnavailable):
            self._report_unavailable(operation, exc)
        if not signals.operation_completed.receivers:
            return  # the common case: nobody listens, so build nothing
        signals.operation_completed.send(
            type(self),
            digest=self._digest(),
            operation=operation,
            duration=time.perf_counter() - started,
            ok=exc is None,
        )

    def _report_unavailable(self, operation: str, exc: SessionUnavailable) -> None:
        if self._unavailable is exc:  # logged once, where it was first met
            return
        self._unavailable = exc
        digest = self._digest()
        logger.error("Session store unavailable during %s (session %s): %s", operation, digest, exc)
        signals.store_unavailable.send(
            type(self), digest=digest, operation=operation, exception=exc
        )

    def _load_or_fallback(self) -> Steps[dict[str, Any]]:
        try:
            if self._unavailable is not None:
                # Known down for this request: fail again at once, without
                # waiting on Redis twice (error pages read request.user too).
                raise self._unavailable
            return (yield from self._load())
        except SessionUnavailable as exc:
            self._report_unavailable("load", exc)
            if self._config.on_unavailable != "anonymous":
                raise
        # Stay up with an empty session that is never saved; the cookie's key
        # is kept so the user finds their session again once Redis is back.
        self._read_only = True
        return {}

    def _digest(self) -> str | None:
        session_key = self.session_key
        return self._digest_of(session_key) if session_key is not None else None

    # Steps: generators of Redis commands -------------------------------------

    def _load(self) -> Steps[dict[str, Any]]:
        session_key = self.session_key
        if session_key is None:
            return (yield from self._missed())
        digest = self._digest_of(session_key)
        redis_key = self._config.prefix + digest
        clock = self._clock
        if clock is None:
            reply, pttl = (yield (scripts.GET, redis_key)), None
        else:
            reply, pttl = yield from clock.read(redis_key)
        if reply is None:
            self._session_key = None
            return (yield from self._missed())
        try:
            if isinstance(reply, Exception):
                raise codec.CorruptSession(str(reply))
            fmt, version, stored_body = codec.split(reply)
            body = self._codec.open(digest, fmt, stored_body)
            data = codec.loads(body)
            expired = "_session_expiry" in data and self._expiry_age(data) <= 0
        except (codec.CorruptSession, TypeError, ValueError) as exc:
            self._session_key = None
            if codec.is_tombstone(reply):  # ended, while another store may hold it
                return {}
            suspicious_logger.warning("Session data corrupted (session %s): %s", digest, exc)
            return {}
        if expired:
            self._session_key = None
            return {}
        self._stored_version, self._stored_body, self._cleared = version, body, False
        self._stored_value = reply if type(reply) is bytes else _as_bytes(reply)
        if self._plan.reseals:  # else always False: the codec writes nothing else
            self._reseal = not self._codec.is_current(fmt, stored_body)
        if clock is not None and pttl is not None:
            reason = yield from clock.on_load(self, redis_key, data, version, pttl)
            if reason is not None:  # past a deadline: over, by the one end path
                yield from self._end(hooks.Ending(digest, reason, session_key, data))
                self._session_key = None
                return {}
        for layer in self._plan.loaders:
            steps = layer.loaded(self, session_key, data)
            if steps is not None:
                yield from steps
        return data

    def _missed(self) -> Steps[dict[str, Any]]:
        # Not in Redis: a layer (a migration's old store) is asked once per cookie.
        cookie, self._unasked_cookie = self._unasked_cookie, None
        if cookie is None:
            return {}
        for layer in self._plan.missers:
            try:
                found = yield from layer.missing(self, cookie)
            except SessionUnavailable:
                self._session_key = cookie  # kept (if valid) for when the store is back
                raise
            if found is None:
                continue
            stored = yield from self._adopt(found)
            if stored is None:  # already over by our clocks: anonymous
                self._session_cache = {}
                return {}
            if not stored:
                # Its key is taken: a concurrent request stored it first, or an
                # end left its tombstone. What Redis holds now wins.
                self._session_key = found.session_key
                return (yield from self._load())
            return self._session_cache
        return {}

    def _adopt(self, found: hooks.Found) -> Steps[bool | None]:
        """Store a session found elsewhere with the one create path: True when
        stored, False when its key is taken, None when it is already over."""
        self._session_cache = found.data
        self._forget_stored()
        try:
            self._expiry_age(found.data)
        except (TypeError, ValueError):  # an expiry Django cannot read: the old store's stands
            found.data.pop("_session_expiry", None)
        if self._clock is not None:
            self._clock.adopted(found.data)
        if found.session_key is None:
            yield from self._create(found.ttl_ms)
        else:
            self._session_key = found.session_key
            try:
                yield from self._save(True, found.ttl_ms)
            except CreateError:
                self._session_key = None
                return False
        session_key = self.session_key
        if found.stored is not None and session_key is not None:
            yield from found.stored(session_key)
        if self._stored_version is None:  # its TTL came out at 0: nothing was written
            self._session_key = None
            return None
        self._imported_until = time.monotonic() + found.ttl_ms / 1000
        return True

    def _exists(self, session_key: str | None) -> Steps[bool]:
        if not codec.is_valid_session_key(session_key):
            return False
        assert session_key is not None
        return bool((yield (scripts.EXISTS, self._redis_key(session_key))))

    def _create(self, lifetime_ms: int | None = None) -> Steps[None]:
        for _ in range(CREATE_ATTEMPTS):
            new_key = self._get_new_session_key()
            self._session_key = new_key
            if self.session_key is None:  # refused: _save would call us again
                got = f"{len(new_key)} characters" if isinstance(new_key, str) else repr(new_key)
                raise ValueError(
                    f"{type(self).__qualname__}._get_new_session_key() returned a key this "
                    "engine cannot use (it takes 8 to 256 printable ASCII characters, no "
                    f"spaces); got {got}."
                )
            try:
                yield from self._save(True, lifetime_ms)
            except CreateError:
                continue
            self.modified = True
            return
        raise SessionUnavailable(
            f"Unable to create a new session key in {CREATE_ATTEMPTS} attempts."
        )

    def _save(self, must_create: bool, lifetime_ms: int | None = None) -> Steps[None]:
        if self.session_key is None:
            return (yield from self._create())
        data: dict[str, Any] | None = getattr(self, "_session_cache", None)
        if data is None:
            data = yield from self._data(no_load=must_create)
        else:  # loaded already (the common case): what _data() does, without its generator
            self.accessed = True
        if self._read_only:
            return None
        session_key = self.session_key
        if session_key is None:
            # Loading found no session under the cookie's key: it was deleted
            # or expired meanwhile, and a save must not bring it back.
            raise UpdateError
        steps = self._save_data(session_key, data, must_create, lifetime_ms)
        for layer in reversed(self._plan.savers):  # the first layer is outermost
            steps = layer.around_save(self, session_key, data, must_create, steps)
        return (yield from steps)

    def _save_data(
        self, session_key: str, data: dict[str, Any], must_create: bool, lifetime_ms: int | None
    ) -> Steps[None]:
        redis_key = self._redis_key(session_key)
        if self._clock is not None:
            yield from self._clock.before_write(redis_key, data)
        body = codec.dumps(data)
        if self._config.max_bytes is not None:
            self._check_size(body, session_key)
        ttl = self._ttl_ms(data, lifetime_ms)
        if must_create:
            return (yield from self._store_new(redis_key, data, body, ttl))
        if ttl <= 0:
            yield from self._end_expired(session_key, data)
            return None
        version = self._stored_version
        if (
            version is not None
            and not self._cleared
            and body == self._stored_body
            and not self._reseal
        ):
            if self._clock is not None and self._clock.refreshed:
                return None  # this request's load already slid the expiry
            if self._imported_until is not None:
                return None  # this request's import wrote it, with what it had left
            touch = (scripts.EVALSHA, scripts.TOUCH, redis_key, version, ttl)
            touched = yield self._timed(touch, data)
            if touched == 0:
                yield from self._gone(session_key, data)
            return None
        return (yield from self._write(redis_key, data, body, ttl))

    def _store_new(
        self, redis_key: str, data: dict[str, Any], body: bytes, ttl: int
    ) -> Steps[None]:
        if ttl <= 0:  # already expired: there is nothing to keep
            self._forget_stored()
            return None
        fmt, stored = self._pack(body)
        value = codec.join(fmt, codec.FIRST_VERSION, stored)
        created = yield self._timed(
            (scripts.SET, redis_key, value, scripts.PX, ttl, scripts.NX), data
        )
        if not created:
            raise CreateError
        self._stored_version, self._stored_body, self._cleared = codec.FIRST_VERSION, body, False
        self._stored_value = value
        return None

    def _write(self, redis_key: str, data: dict[str, Any], body: bytes, ttl: int) -> Steps[None]:
        if self._cleared or self._stored_version is None:
            return (yield from self._replace(redis_key, data, body, ttl))
        expected, current = self._stored_version, self._stored_value
        changes: tuple[dict[str, Any], set[str]] | None = None
        native = current is not None
        for attempt in range(1, self._config.max_conflict_retries + 1):
            fmt, stored = self._pack(body)
            version = b"%d" % (int(expected) + 1)
            value = codec.join(fmt, version, stored)
            save = (scripts.EVALSHA, scripts.SAVE, redis_key, expected, value, ttl)
            sent = save if self._clock is None else self._clock.command(save, data)
            # The clock hands back a command with no deadline as it is; a deadline
            # needs the script, which measures the time left on Redis's clock.
            native = native and sent is save and (yield (scripts.IFEQ_SUPPORTED,))
            if native:
                assert current is not None
                reply, native = yield from self._swap(redis_key, value, current, ttl)
            if not native:
                reply = yield sent
            if reply == 0:
                yield from self._gone(self.session_key or "", data)
            if reply == 1:
                self._session_cache = data
                self._stored_version, self._stored_body = version, body
                self._stored_value = value
                return None
            # Another request saved first: re-apply our own changes onto its data.
            signals.save_conflict.send(type(self), digest=self._digest(), attempt=attempt)
            if changes is None:
                changes = self._changes(data)
            current = _as_bytes(reply)
            fmt, expected, theirs_stored = codec.split(reply)
            data = _apply(changes, self._decode_or_empty(fmt, theirs_stored))
            body = codec.dumps(data)
            self._check_size(body, self.session_key or "")
            ttl = self._ttl_ms(data)
            if ttl <= 0:
                yield from self._end_expired(self.session_key or "", data)
                return None
        raise SessionUnavailable(
            f"Session kept changing under {self._config.max_conflict_retries} "
            "concurrent saves; nothing was written."
        )

    def _swap(
        self, redis_key: str, value: bytes, current: bytes, ttl: int
    ) -> Steps[tuple[Any, bool]]:
        """The SAVE script's work as one native command (Valkey 8.1+, Redis 8.4+):
        ``(reply, True)`` with the script's reply (1 written, 0 gone or not ours,
        else the current value), or ``(None, False)`` when the server refused it
        (the driver forgot its capability): the script does this save."""
        try:
            reply = yield scripts.set_ifeq(redis_key, value, current, ttl)
        except SessionUnavailable as exc:
            if not scripts.ifeq_refused(cast(Exception, exc.__cause__)):
                raise
            return None, False
        if isinstance(reply, Exception):  # another Redis type: not ours, left alone
            return 0, True
        outcome, handed_back = scripts.swap_outcome(reply, current)
        if outcome is scripts.Swap.WRITTEN:
            return 1, True
        theirs: Any = handed_back
        if outcome is scripts.Swap.NO_VALUE:
            # Valkey answers nil only when the key is gone; Redis 8.4's documents
            # leave open whether a failed condition answers nil too. A GET tells
            # (the key gone is rare, so this read is too).
            theirs = yield (scripts.GET, redis_key)
            if theirs is None or isinstance(theirs, Exception):
                return 0, True
        try:
            codec.split(theirs)
        except codec.CorruptSession:  # not a session of ours: never overwritten, as SAVE
            return 0, True
        return theirs, True

    def _replace(self, redis_key: str, data: dict[str, Any], body: bytes, ttl: int) -> Steps[None]:
        fmt, stored = self._pack(body)
        reply = yield self._timed(
            (scripts.EVALSHA, scripts.REPLACE, redis_key, fmt, stored, ttl), data
        )
        if reply == 0:
            yield from self._gone(self.session_key or "", data)
        self._session_cache = data
        self._stored_version, self._stored_body, self._cleared = b"%d" % reply, body, False
        self._stored_value = codec.join(fmt, self._stored_version, stored)
        return None

    def _delete(self, session_key: str | None) -> Steps[None]:
        if session_key is None:
            session_key = self.session_key
            if session_key is None:
                return None
        if session_key == self._unasked_cookie:
            self._unasked_cookie = None
        if not codec.is_valid_session_key(session_key):
            return None
        data = self._loaded_data() if session_key == self.session_key else None
        ending = hooks.Ending(self._digest_of(session_key), hooks.DELETED, session_key, data)
        yield from self._end(ending)
        return None

    def _retire(self, old_key: str, data: dict[str, Any]) -> Steps[None]:
        ending = hooks.Ending(self._digest_of(old_key), hooks.CYCLED, old_key, data)
        if (yield from self._end(ending)):
            return None
        new_key = self.session_key
        assert new_key is not None  # create() gave it
        yield from self._end(hooks.Ending(self._digest_of(new_key), hooks.CYCLED, new_key, data))
        self._session_key = None
        self._session_cache = {}
        if self._clock is not None:
            self._clock.signed_out()
        return None

    def _gone(self, session_key: str, data: dict[str, Any]) -> Steps[None]:
        """A write found the session gone: raise UpdateError (it must not come back).

        Past its deadline, the write's script removed it: that end, too, takes
        the end path (the index entry, a tombstone while migrating, the signals).
        """
        clock = self._clock
        if clock is not None and clock.past_deadline(data):
            digest = self._digest_of(session_key)
            yield from self._end(hooks.Ending(digest, hooks.ABSOLUTE, session_key, data))
        raise UpdateError

    def _end_expired(self, session_key: str, data: dict[str, Any]) -> Steps[None]:
        # A save whose expiry has passed: nothing to keep.
        ending = hooks.Ending(self._digest_of(session_key), hooks.EXPIRED, session_key, data)
        yield from self._end(ending)
        return None

    def _end(self, ending: hooks.Ending) -> Steps[bool]:
        """The one end path: remove the session's key, then every layer's part.

        Returns whether the session was still there. With a layer that keeps the
        session elsewhere too (a migration), the key is overwritten with a
        tombstone instead, so nothing can write the session back under it.
        """
        active = self._plan
        if ending.session_key is not None and ending.session_key == self.session_key:
            self._forget_stored()
        redis_key = self._config.prefix + ending.digest
        value: Any = None
        if active.tombstones:
            ttl = max(layer.tombstone_ms(self, ending) for layer in active.tombstones)
            value = yield (scripts.EVALSHA, scripts.TOMBSTONE, redis_key, codec.TOMBSTONE, ttl)
            existed = value is not None and not isinstance(value, Exception)
            existed = existed and not codec.is_tombstone(value)
        elif ending.data is None and any(layer.wants_data(ending) for layer in active.enders):
            value = yield (scripts.GETDEL, redis_key)
            existed = value is not None and not isinstance(value, Exception)
        else:
            existed = (yield (scripts.DEL, redis_key)) == 1
        if existed and ending.data is None and value is not None:
            ending.data = self._decoded(ending.digest, value)
        ending.existed = existed
        for layer in active.enders:
            yield from layer.ended(self, ending)
        self._ended(ending)
        return existed

    def _ended(self, ending: hooks.Ending) -> None:
        sender = type(self)
        if ending.reason in hooks.TIMED_OUT:
            signals.session_timed_out.send(sender, digest=ending.digest, reason=ending.reason)
        if ending.existed and signals.session_ended.receivers:
            signals.session_ended.send(sender, digest=ending.digest, reason=ending.reason)

    def _data(self, no_load: bool) -> Steps[dict[str, Any]]:
        """``_get_session()``, with the load (if any) yielded as a command."""
        self.accessed = True
        try:
            return self._session_cache
        except AttributeError:
            pass
        if self.session_key is None or no_load:
            self._session_cache = {}
        else:
            self._session_cache = yield from self._load_or_fallback()
        return self._session_cache

    # Pure helpers -------------------------------------------------------------

    def _changes(self, ours: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        """What this request did to the session it loaded: keys set, keys deleted."""
        loaded = codec.loads(self._stored_body) if self._stored_body is not None else {}
        changed = {k: v for k, v in ours.items() if k not in loaded or _differs(loaded[k], v)}
        return changed, loaded.keys() - ours.keys()

    def _pack(self, body: bytes) -> tuple[bytes, bytes]:
        session_key = self.session_key
        assert session_key is not None
        self._reseal = False
        return self._codec.seal(self._digest_of(session_key), body)

    def _decode_or_empty(self, fmt: bytes, stored_body: bytes) -> dict[str, Any]:
        try:
            digest = self._digest_of(self.session_key or "")
            return codec.loads(self._codec.open(digest, fmt, stored_body))
        except codec.CorruptSession as exc:
            suspicious_logger.warning(
                "Session data corrupted (session %s): %s; our changes replace it",
                self._digest(),
                exc,
            )
            return {}

    def _decoded(self, digest: str, value: Any) -> dict[str, Any] | None:
        """A stored value read by an end, or None when it is no session of ours."""
        try:
            fmt, _, stored_body = codec.split(value)
            return codec.loads(self._codec.open(digest, fmt, stored_body))
        except (codec.CorruptSession, TypeError):
            return None

    def _loaded_data(self) -> dict[str, Any] | None:
        """The session as this instance last read or wrote it (clear() does not forget it)."""
        body = self._stored_body
        try:
            return codec.loads(body) if body is not None else None
        except codec.CorruptSession:  # pragma: no cover - we wrote it
            return None

    def _expiry_age(self, data: dict[str, Any]) -> float:
        expiry = data.get("_session_expiry")
        if not expiry:  # the common case, without get_expiry_age()'s clock read
            return self.get_session_cookie_age()
        age: float = self.get_expiry_age(expiry=expiry)
        return age

    def _timed(self, command: tuple[Any, ...], data: dict[str, Any]) -> tuple[Any, ...]:
        return command if self._clock is None else self._clock.command(command, data)

    def _ttl_ms(self, data: dict[str, Any], lifetime_ms: int | None = None) -> int:
        """Django's expiry age of ``data`` in ms, cut by the clock and by ``lifetime_ms``
        (what a session found elsewhere had left: it never outlives that)."""
        if lifetime_ms is None and not data.get("_session_expiry"):
            # The common case, twice per save: the cookie age as it is, in ms.
            cookie_age = self.get_session_cookie_age()
            if type(cookie_age) is int and 0 < cookie_age <= MAX_TTL_S:
                ttl = cookie_age * 1000
                return ttl if self._clock is None else self._clock.cap(ttl, data)
        try:
            age = self._expiry_age(data)
            ttl = math.ceil(min(age * 1000, MAX_TTL_MS)) if age > 0 else 0
        except (TypeError, ValueError) as exc:
            raise TypeError(
                "Session key '_session_expiry' must be a number of seconds or a datetime, "
                f"got {data.get('_session_expiry')!r}"
            ) from exc
        if lifetime_ms is not None:
            ttl = min(ttl, lifetime_ms)
        if ttl <= 0:
            return 0
        return ttl if self._clock is None else self._clock.cap(ttl, data)

    # hooks.Store's: the index asks it on every save, so without a wrapper frame.
    ttl_ms = _ttl_ms

    def _check_size(self, body: bytes, session_key: str) -> None:
        limit = self._config.max_bytes
        if limit is not None and len(body) > limit:
            raise SessionTooLarge(
                f"Session {self._digest_of(session_key)} is {len(body)} bytes of JSON, over "
                f'SESSION_REDIS["max_bytes"] = {limit}; nothing was written.'
            )

    def _forget_stored(self) -> None:
        self._stored_version = self._stored_body = self._stored_value = None


def _as_bytes(value: bytes | str) -> bytes:
    # A client made with decode_responses=True reads str; codec.split's rule.
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def _apply(changes: tuple[dict[str, Any], set[str]], theirs: dict[str, Any]) -> dict[str, Any]:
    changed, deleted = changes
    merged = {k: v for k, v in theirs.items() if k not in deleted}
    merged.update(changed)
    return merged


def _differs(before: Any, after: Any) -> bool:
    # 1 == 1.0 == True, yet they store differently: compare the JSON too.
    return bool(before != after) or codec.dumps({"": before}) != codec.dumps({"": after})
