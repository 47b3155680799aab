"""The extension points of the store, and the small protocol features may use.

A feature plugs into the engine in one of three ways:

- the **codec** slot: how a JSON body is sealed into a stored value and opened
  again (default: ``PlainCodec``, compression only; ``crypto`` encrypts);
- the **clock** slot: what shapes TTLs (default: Django's expiry age alone;
  ``timeouts`` adds the idle window and the absolute deadline);
- **layers**: objects whose hooks default to nothing and that the store calls,
  in the plan's fixed order (see ``plan``), on load (``loaded``), around a save
  (``around_save``), on a miss (``missing``), after an end (``ended``), from
  ``clearsessions`` (``clear_expired``).

Features see the store only through ``Store`` below, never its private members,
and import neither ``session`` nor ``plan``: imports run downward.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from django_redis_sessions import codec, conf, scripts
from django_redis_sessions.exceptions import SessionUnavailable

T = TypeVar("T")
U = TypeVar("U")
Command = tuple[Any, ...]
Steps = Generator[Command, Any, T]

#: Why a session ended (``signals.session_ended``'s ``reason``).
DELETED = "deleted"  # delete(), flush(), logout()
CYCLED = "cycled"  # the old key of cycle_key()
ENDED = "ended"  # users.end_session(s): the user's other devices, the admin, deactivation
EVICTED = "evicted"  # past SESSION_REDIS["max_sessions_per_user"]
EXPIRED = "expired"  # a save whose expiry had already passed
IDLE = "idle"
ABSOLUTE = "absolute"
TIMED_OUT = (IDLE, ABSOLUTE)


@dataclass
class Ending:
    """One session being ended, as the one end path hands it to every layer."""

    digest: str
    reason: str
    #: The session key, when this process holds it (a logout, a rotation); an
    #: end by handle (another device, the admin) knows only the digest.
    session_key: str | None = None
    #: The session's data, when known (loaded, or read as it was removed).
    data: dict[str, Any] | None = None
    #: Whose session it is, when the caller knows (``users``).
    uid: str | None = None
    #: Whether the session was still there (set by the removal).
    existed: bool = False


@dataclass(frozen=True)
class Found:
    """What a miss found elsewhere (an old store): the core stores it as a new session."""

    data: dict[str, Any]
    #: Its remaining lifetime (ms): the stored TTL is never longer.
    ttl_ms: int
    #: The key to store it under, or None for a fresh one (the cookie changes).
    session_key: str | None
    #: Steps to run once it is stored, given the key it got.
    stored: Callable[[str], Steps[None]] | None = field(default=None, compare=False)


class Store(Protocol):
    """What a layer may use of a session store."""

    modified: bool

    @property
    def scratch(self) -> dict[str, Any]:
        """Room for layers' own per-request state, each under keys it names."""
        ...

    @property
    def has_scratch(self) -> bool:
        """Whether a layer put anything there yet (without making the room)."""
        ...

    @property
    def session_key(self) -> str | None: ...

    @property
    def config(self) -> conf.Config: ...

    @property
    def read_only(self) -> bool:
        """The store met an outage and serves an empty session that is never saved."""
        ...

    def digest_of(self, session_key: str) -> str: ...

    def ttl_ms(self, data: dict[str, Any]) -> int:
        """The TTL a save of ``data`` would get (ms; 0: already expired)."""
        ...

    def restamp(self, data: dict[str, Any]) -> Steps[bool]:
        """Rewrite the loaded session with ``data``, keeping its TTL and version, and
        without marking it modified: engine bookkeeping no user sees."""
        ...

    def adopt(self, found: Found) -> Steps[bool | None]:
        """Store a session found elsewhere as a new one (SET NX, through every cap
        and layer); False when its key is taken (never overwritten), None when
        it is already over by this engine's clocks (nothing is stored)."""
        ...

    def end_steps(self, ending: Ending) -> Steps[bool]:
        """The one end path: remove the session and run every layer's part."""
        ...


class Codec:
    """How a JSON body is stored: compressed when configured, never encrypted."""

    def __init__(self, compress_min_bytes: int | None) -> None:
        self.compress_min_bytes = compress_min_bytes

    def seal(self, digest: str, body: bytes) -> tuple[bytes, bytes]:
        """``(format, stored body)`` of a JSON body."""
        if self.compress_min_bytes is None:  # the default: no call on the hot path
            return codec.PLAIN, body
        return codec.pack_body(body, self.compress_min_bytes)

    def open(self, digest: str, fmt: bytes, stored_body: bytes) -> bytes:
        """The JSON body of a stored value, or CorruptSession."""
        if fmt == codec.PLAIN:
            return stored_body
        if fmt == codec.ENCRYPTED:
            raise codec.CorruptSession('encrypted, but SESSION_REDIS["encryption_keys"] is not set')
        return codec.unpack_body(fmt, stored_body)

    def is_current(self, fmt: bytes, stored_body: bytes) -> bool:
        """Whether a stored value is as this codec writes it (else a save rewrites it)."""
        return True


class Clock(Protocol):
    """One request's view of one session's timeouts (see ``timeouts.Clock``)."""

    refreshed: bool
    idle_ms: int | None

    def read(self, redis_key: str) -> Steps[tuple[Any, int | None]]: ...

    def on_load(
        self, store: Store, redis_key: str, data: dict[str, Any], version: bytes, pttl: int
    ) -> Steps[str | None]: ...

    def cap(self, ttl_ms: int, data: dict[str, Any]) -> int: ...

    def command(self, command: Command, data: dict[str, Any]) -> Command: ...

    def before_write(self, redis_key: str, data: dict[str, Any]) -> Steps[None]: ...

    def signed_out(self) -> None: ...

    def past_deadline(self, data: dict[str, Any]) -> bool: ...

    def adopted(self, data: dict[str, Any]) -> None: ...

    def absolute_remaining(self, data: dict[str, Any]) -> int | None: ...

    def idle_remaining(self, store: Store, data: dict[str, Any]) -> int | None: ...

    def cap_age(self, age: int, data: dict[str, Any]) -> int: ...

    def cap_date(self, date: datetime, data: dict[str, Any]) -> datetime: ...


class Layer:
    """A feature's hooks; each defaults to nothing, and the plan calls only overrides."""

    def loaded(self, store: Store, session_key: str, data: dict[str, Any]) -> Steps[None] | None:
        """After a load found the session: None, or steps to run (e.g. ``store.restamp``)."""
        return None

    def around_save(
        self,
        store: Store,
        session_key: str,
        data: dict[str, Any],
        must_create: bool,
        write: Steps[None],
    ) -> Steps[None]:
        """Wrap the write of a save: before it, after it, or instead of it.

        May return ``write`` itself when there is nothing to add (no wrapper)."""
        return write

    def missing(self, store: Store, cookie: str) -> Steps[Found | None]:
        """A cookie Redis does not know: what is it elsewhere (None: nothing)."""
        yield from ()
        return None

    def tombstone_ms(self, store: Store, ending: Ending) -> int:
        """How long an ended session's key must refuse a new write (0: plain DEL)."""
        return 0

    def ended(self, store: Store, ending: Ending) -> Steps[None]:
        """After the session's key was removed: this layer's part of the end."""
        yield from ()
        return None

    def wants_data(self, ending: Ending) -> bool:
        """Whether ``ended`` needs the session's data (read as it is removed)."""
        return False

    def clear_expired(self) -> None:
        """``manage.py clearsessions``: prune what this layer keeps outside Redis."""


def overrides(layer: Layer, name: str) -> bool:
    """Whether ``layer`` has its own ``name`` hook (the plan calls only those)."""
    return getattr(type(layer), name) is not getattr(Layer, name)


# Running two operations' steps in fewer round trips ------------------------------


def together(first: Steps[T], then: Steps[U]) -> Steps[tuple[T, U]]:
    """Run ``first``, then ``then``, with the first command of each sent in one round
    trip (``scripts.PIPELINE``): Redis runs ``first``'s before ``then``'s. The rest of
    each runs on its own, ``first`` to its end before ``then`` goes on.

    Both are started before anything is sent, ``first`` before ``then`` (so what
    ``first`` does to shared data before its command, ``then`` sees); one that
    raises on the way sends nothing. Questions to the driver that change nothing
    (``scripts.QUESTIONS``) that ``then`` asks first are answered before. If
    ``first`` fails, ``then`` is closed and the failure raised: what ``then``'s
    command did is left to the caller.
    """
    try:
        command = next(first)
    except StopIteration as stop:
        return stop.value, (yield from then)
    try:
        following = next(then)
        while following[0] in scripts.QUESTIONS:  # changes nothing: asked first
            try:
                answer = yield following
            except Exception as exc:  # the driver's failure, for then to meet
                following = then.throw(exc)
            else:
                following = then.send(answer)
    except StopIteration as stop:
        return (yield from resumed(first, command)), stop.value
    except BaseException:
        first.close()
        raise
    if command[0] in scripts.DRIVER_ONLY or following[0] in scripts.DRIVER_ONLY:
        try:
            done = yield from resumed(first, command)
        except BaseException:
            then.close()
            raise
        return done, (yield from resumed(then, following))
    try:
        replies = yield (scripts.PIPELINE, command, following)
    except SessionUnavailable as exc:  # the connection failed: neither is known to have run
        replies = [exc, exc]
    try:
        done = yield from answered(first, replies[0])
    except BaseException:
        then.close()
        raise
    return done, (yield from answered(then, replies[1]))


def answered(steps: Steps[T], outcome: Any) -> Steps[T]:
    """The rest of ``steps``, started and waiting for the reply of a command already
    sent: ``outcome``, a pipeline's (a SessionUnavailable is raised in it)."""
    try:
        if isinstance(outcome, SessionUnavailable):
            command = steps.throw(outcome)
        else:
            command = steps.send(outcome)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    return (yield from resumed(steps, command))


def resumed(steps: Steps[T], command: Command) -> Steps[T]:
    """The rest of ``steps``, started and stopped at ``command`` (not sent yet)."""
    while True:
        try:
            reply = yield command
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as exc:  # the driver's failure, for the operation to meet
            try:
                command = steps.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            continue
        try:
            command = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
