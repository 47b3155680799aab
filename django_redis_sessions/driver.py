"""Run a session operation's commands against Redis, sync or async.

An operation is a generator that yields commands (tuples; see ``scripts``) and
receives each reply. Redis failures are thrown into it as SessionUnavailable, so
the operation decides what a failure means; a WRONGTYPE reply (someone else's
key under our prefix) is sent in as a value, since only a read can meet it.

With ``SESSION_REDIS["wait_replicas"] = N``, every write is followed by
``WAIT N timeout`` in the same round trip and on the same connection (WAIT
counts the replicas that have this connection's writes), and fewer than N
acknowledgements fail the operation. On a Cluster that connection is one to
the primary owning the key, so the pair is sent to that node directly, with
MOVED/ASK and failovers handled here the way redis-py handles them.

An operation may also yield ``(scripts.IFEQ_SUPPORTED,)``: the driver answers
whether the server takes ``SET ... IFEQ`` (asked once per connection pool).

``(scripts.PIPELINE, command, ...)`` sends several commands in one round trip,
in order, with one WAIT after them when any needs it; on a Cluster, one round
trip per run of consecutive commands in the same slot, in order. The reply is
the list of the commands' outcomes, each as the command alone would get it: a
failure comes as the ``SessionUnavailable`` the driver would have thrown (the
operation raises it where it wants), WRONGTYPE as a ``WrongType`` value. A script
the server has lost (NOSCRIPT) is sent again by its source in a second round
trip, after the commands that followed it had run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from asgiref.sync import sync_to_async
from redis.backoff import ExponentialWithJitterBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from django_redis_sessions import conf, connection, scripts
from django_redis_sessions.exceptions import SessionUnavailable

T = TypeVar("T")
Command = tuple[Any, ...]
# (replicas, timeout in ms); (0, 0) sends no WAIT.
Wait = tuple[int, int]
NO_WAIT: Wait = (0, 0)
WAIT = "WAIT"
ASKING = "ASKING"
# Not a Redis command: ``(CALL, function, *args)`` runs a blocking function (an
# old session store, see migration.py) and sends back its result or raises its
# error into the operation; the async driver runs it in a thread.
CALL = scripts.CALL

# Failures of the client itself, not only of a command: a cluster client that
# cannot read the slot map raises RedisClusterException, which is no RedisError.
CLIENT_ERRORS = (RedisError, RedisClusterException)
# Worth another try on the key's (possibly new) primary after a topology refresh.
_CLUSTER_RETRY = (redis.ConnectionError, redis.TimeoutError, RedisClusterException)
_backoff = ExponentialWithJitterBackoff(
    cap=conf.DEFAULT_BACKOFF_CAP, base=conf.DEFAULT_BACKOFF_BASE
)


class WrongType(Exception):
    """The key holds a value of another Redis type."""


class NotReplicated(RedisError):
    """WAIT counted fewer replicas than ``SESSION_REDIS["wait_replicas"]``."""


def _script_args(command: Command) -> tuple[scripts.Script, tuple[Any, ...]]:
    script: scripts.Script = command[1]
    return script, (1, *command[2:])


def _outcome(exc: Exception) -> WrongType | SessionUnavailable:
    """What the operation gets for a failed command: WrongType (a value) or the
    SessionUnavailable it meets."""
    if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
        return WrongType(str(exc))
    if isinstance(exc, NotReplicated):
        failure = SessionUnavailable(str(exc))
    else:
        failure = SessionUnavailable(f"Redis failed: {type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return failure


def _resume_after(steps: Generator[Command, Any, Any], exc: Exception) -> Command:
    """Hand a failed command's error to the operation; return its next command."""
    outcome = _outcome(exc)
    if isinstance(outcome, SessionUnavailable):
        return steps.throw(outcome)
    return steps.send(outcome)


def _outcomes(replies: list[Any]) -> list[Any]:
    """A pipeline's replies as the operation gets them (see the module's docstring)."""
    return [_outcome(reply) if isinstance(reply, Exception) else reply for reply in replies]


def wait_of(config: conf.Config) -> Wait:
    return config.wait


def needs_wait(command: Command) -> bool:
    """Writes wait for replicas; reads and the expiry-only TOUCH script do not."""
    if command[0] is scripts.EVALSHA:
        return command[1] not in scripts.NO_WAIT
    return command[0] in (scripts.SET, scripts.DEL, scripts.GETDEL)


def _wire(command: Command, *, by_source: bool = False) -> Command:
    """The command as sent: a script call becomes EVALSHA (or EVAL) with its key count."""
    if command[0] is not scripts.EVALSHA:
        return command
    script, args = _script_args(command)
    if by_source:
        return (scripts.EVAL, script.source, *args)
    return (scripts.EVALSHA, script.sha, *args)


def _is_ifeq(command: Command) -> bool:
    return command[0] is scripts.SET and len(command) > 3 and command[3] is scripts.IFEQ


def _options(command: Command) -> dict[str, Any]:
    # redis-py turns a SET's reply into True/False unless told GET was asked for.
    return {"get": True} if _is_ifeq(command) else {}


def _note_refusal(client: Any, command: Command, exc: Exception) -> None:
    """A server that refuses IFEQ after all (a failover to an older one, a proxy):
    ask it again next time rather than trust the pool's answer."""
    if _is_ifeq(command) and isinstance(exc, ResponseError) and scripts.ifeq_refused(exc):
        connection.forget_capabilities(client)


def _key(command: Command) -> Any:
    # Every command has exactly one key: after the script for a script call.
    return command[2] if command[0] is scripts.EVALSHA else command[1]


def _slot_runs(commands: Sequence[Command]) -> list[list[Command]]:
    """Runs of consecutive commands whose keys share a Cluster slot, in order."""
    runs: list[list[Command]] = []
    last = -1
    for command in commands:
        key = _key(command)
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        if slot != last or not runs:
            runs.append([])
        runs[-1].append(command)
        last = slot
    return runs


# The plumbing of every pipeline, sync or async: a generator that yields the
# batches to send on one connection (and one Cluster slot) and receives their
# replies, error replies as values; it returns the commands' replies, a write
# whose WAIT fell short replaced by NotReplicated.
Batches = Generator[list[Command], list[Any], list[Any]]


def _batches(commands: Sequence[Command], wait: Wait) -> Batches:
    waits = bool(wait[0]) and any(needs_wait(command) for command in commands)
    tail: list[Command] = [(WAIT, *wait)] if waits else []
    sent = yield [_wire(command) for command in commands] + tail
    replies, acknowledged = sent[: len(commands)], sent[len(commands) :]
    lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if lost:  # a restarted, flushed or new server: EVAL caches them again
        again = yield [_wire(commands[i], by_source=True) for i in lost] + tail
        for i, reply in zip(lost, again, strict=False):
            replies[i] = reply
        acknowledged += again[len(lost) :]
    if waits:
        short = _not_replicated(acknowledged, wait)
        if short is not None:
            replies = [
                short if needs_wait(command) and not isinstance(reply, Exception) else reply
                for command, reply in zip(commands, replies, strict=True)
            ]
    return replies


def _not_replicated(acknowledged: list[Any], wait: Wait) -> Exception | None:
    """Why the WAITs' replies fall short of ``wait``, or None when they do not."""
    failed = next((reply for reply in acknowledged if isinstance(reply, Exception)), None)
    if failed is not None:
        return failed
    replicas, timeout = wait
    fewest = min(acknowledged)
    if fewest < replicas:
        return NotReplicated(
            f"The session was written to the primary, but only {fewest} of "
            f'{replicas} replicas (SESSION_REDIS["wait_replicas"]) confirmed it '
            f"within {timeout} ms."
        )
    return None


def _single(replies: list[Any]) -> Any:
    (reply,) = replies
    if isinstance(reply, Exception):
        raise reply
    return reply


# Sync ------------------------------------------------------------------------------


def execute(client: connection.SyncClient, command: Command, wait: Wait = NO_WAIT) -> Any:
    # On every command of every request: _wire and _options are inlined.
    name = command[0]
    send: Callable[..., Any] = client.execute_command
    if name is scripts.GET:  # a load's read: never waited for, nothing to wire
        return send(*command)
    if name is scripts.IFEQ_SUPPORTED:
        return connection.supports_ifeq(client)
    if name is scripts.PIPELINE:
        return _outcomes(_pipelined(client, command[1:], wait))
    if wait[0] and needs_wait(command):
        return _single(_pipelined(client, [command], wait))
    if name is scripts.EVALSHA:
        script: scripts.Script = command[1]
        try:
            return send(name, script.sha, 1, *command[2:])
        except NoScriptError:  # a restarted, flushed or new server: EVAL caches it again
            return send(scripts.EVAL, script.source, 1, *command[2:])
    if name is scripts.SET and len(command) > 3 and command[3] is scripts.IFEQ:
        return send(*command, get=True)
    return send(*command)


def _pipelined(client: connection.SyncClient, commands: Sequence[Command], wait: Wait) -> list[Any]:
    """The replies of ``commands`` (see ``_batches``), in as few round trips as their
    slots allow; a failure of the connection is raised."""
    if not connection.is_cluster(client):
        single = cast(redis.Redis, client)
        return _run_batches(_batches(commands, wait), functools.partial(_pipeline, single))
    cluster = cast(redis.cluster.RedisCluster, client)
    replies: list[Any] = []
    for run_ in _slot_runs(commands):
        send = functools.partial(_cluster_pipeline, cluster, _key(run_[0]))
        replies += _run_batches(_batches(run_, wait), send)
    return replies


def _run_batches(batches: Batches, send: Callable[[list[Command]], list[Any]]) -> list[Any]:
    try:
        batch = next(batches)
        while True:
            batch = batches.send(send(batch))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _pipeline(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    """One round trip on one connection, no MULTI; error replies come back as values."""
    with client.pipeline(transaction=False) as pipe:
        for command in commands:
            cast(Any, pipe).execute_command(*command, **_options(command))
        return pipe.execute(raise_on_error=False)


def _cluster_pipeline(
    client: redis.cluster.RedisCluster, key: Any, commands: list[Command]
) -> list[Any]:
    """``commands`` as one pipeline to the primary that owns ``key``."""
    ask: Any = None
    error: Exception | None = None
    for attempt in range(1 + conf.DEFAULT_RETRIES):
        if attempt and ask is None:
            time.sleep(_backoff.compute(attempt))
        try:
            node = ask or cast(Any, client).get_node_from_key(key)
            batch = [(ASKING,), *commands] if ask else commands
            ask = None
            replies = _pipeline(client.get_redis_connection(node), batch)[-len(commands) :]
        except _CLUSTER_RETRY as exc:  # the node is gone or the slot map is stale
            error = exc
            _refresh(client.nodes_manager.initialize)
            continue
        error = replies[0] if _redirected(replies[0]) else None
        if error is None:
            return replies
        if isinstance(error, MovedError):
            _refresh(client.nodes_manager.initialize)
        elif isinstance(error, AskError):  # the key is migrating: ask its new home once
            ask = cast(Any, client).get_node(error.host, error.port)
            if ask is None:
                _refresh(client.nodes_manager.initialize)
    assert error is not None
    raise error


def _redirected(reply: Any) -> bool:
    return isinstance(reply, (AskError, TryAgainError, ClusterDownError))


def _refresh(initialize: Callable[[], Any]) -> None:
    # Best effort: when no node answers, the retry fails and reports why.
    with contextlib.suppress(*CLIENT_ERRORS):
        initialize()


def _call(steps: Generator[Command, Any, Any], command: Command) -> Command:
    try:
        result = command[1](*command[2:])
    except Exception as exc:
        return steps.throw(exc)
    return steps.send(result)


async def _acall(command: Command) -> tuple[Any, Exception | None]:
    # Returns the outcome rather than resuming the operation here: its
    # StopIteration must not escape a coroutine.
    try:
        return await sync_to_async(command[1])(*command[2:]), None
    except Exception as exc:
        return None, exc


def run(steps: Generator[Command, Any, T]) -> T:
    wait = conf.get_config().wait
    client: connection.SyncClient | None = None
    try:
        command = next(steps)
        while True:
            if command[0] is CALL:
                command = _call(steps, command)
                continue
            try:
                if client is None:  # fetched in the try: building a cluster client connects
                    client = connection.get_client()
                reply = execute(client, command, wait)
            except CLIENT_ERRORS as exc:
                _note_refusal(client, command, exc)
                command = _resume_after(steps, exc)
            else:
                command = steps.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


# Async -----------------------------------------------------------------------------


async def aexecute(client: connection.AsyncClient, command: Command, wait: Wait = NO_WAIT) -> Any:
    name = command[0]
    if name is scripts.GET:
        return await client.execute_command(*command)
    if name is scripts.IFEQ_SUPPORTED:
        return await connection.asupports_ifeq(client)
    if name is scripts.PIPELINE:
        return _outcomes(await _apipelined(client, command[1:], wait))
    if wait[0] and needs_wait(command):
        return _single(await _apipelined(client, [command], wait))
    send: Callable[..., Any] = client.execute_command
    if name is scripts.EVALSHA:
        script: scripts.Script = command[1]
        try:
            return await send(name, script.sha, 1, *command[2:])
        except NoScriptError:
            return await send(scripts.EVAL, script.source, 1, *command[2:])
    if name is scripts.SET and len(command) > 3 and command[3] is scripts.IFEQ:
        return await send(*command, get=True)
    return await send(*command)


async def _apipelined(
    client: connection.AsyncClient, commands: Sequence[Command], wait: Wait
) -> list[Any]:
    """The async twin of ``_pipelined``."""
    if not connection.is_cluster(client):
        return await _arun_batches(_batches(commands, wait), client, None)
    replies: list[Any] = []
    for run_ in _slot_runs(commands):
        replies += await _arun_batches(_batches(run_, wait), client, _key(run_[0]))
    return replies


async def _arun_batches(batches: Batches, client: connection.AsyncClient, key: Any) -> list[Any]:
    """Send each batch to ``client``, or on a Cluster to the primary owning ``key``."""
    try:
        batch = next(batches)
        while True:
            if connection.is_cluster(client):
                replies = await _acluster_pipeline(cast(Any, client), key, batch)
            else:
                replies = await _apipeline(cast(redis.asyncio.Redis, client), batch)
            batch = batches.send(replies)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def _apipeline(client: redis.asyncio.Redis, commands: Sequence[Command]) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            cast(Any, pipe).execute_command(*command, **_options(command))
        return await pipe.execute(raise_on_error=False)


async def _acluster_pipeline(
    client: redis.asyncio.cluster.RedisCluster, key: Any, commands: list[Command]
) -> list[Any]:
    ask: Any = None
    error: Exception | None = None
    for attempt in range(1 + conf.DEFAULT_RETRIES):
        if attempt and ask is None:
            await asyncio.sleep(_backoff.compute(attempt))
        try:
            await client.initialize()  # a no-op once the slot map is known
            node = ask or client.get_node_from_key(key)
            batch = [(ASKING,), *commands] if ask else commands
            ask = None
            # The asyncio cluster has no per-node client: its node sends a batch
            # of commands on one of its connections, replies in each command.
            queued = [
                redis.asyncio.cluster.PipelineCommand(i, *command, **_options(command))
                for i, command in enumerate(batch)
            ]
            await cast(Any, node).execute_pipeline(queued)
            replies = [queued_command.result for queued_command in queued][-len(commands) :]
        except _CLUSTER_RETRY as exc:
            error = exc
            await _arefresh(client)
            continue
        error = replies[0] if _redirected(replies[0]) else None
        if error is None:
            return replies
        if isinstance(error, MovedError):
            await _arefresh(client)
        elif isinstance(error, AskError):
            ask = client.get_node(error.host, error.port)
            if ask is None:
                await _arefresh(client)
    assert error is not None
    raise error


async def _arefresh(client: redis.asyncio.cluster.RedisCluster) -> None:
    with contextlib.suppress(*CLIENT_ERRORS):
        await client.nodes_manager.initialize()


async def arun(steps: Generator[Command, Any, T]) -> T:
    wait = conf.get_config().wait
    client = await connection.get_async_client()
    if client is None:  # only a sync client was configured: use it from a thread
        return await sync_to_async(run)(steps)
    try:
        command = next(steps)
        while True:
            if command[0] is CALL:
                result, error = await _acall(command)
                command = steps.send(result) if error is None else steps.throw(error)
                continue
            try:
                reply = await aexecute(client, command, wait)
            except CLIENT_ERRORS as exc:
                _note_refusal(client, command, exc)
                command = _resume_after(steps, exc)
            else:
                command = steps.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
