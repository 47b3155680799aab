"""Run a session operation's commands against Redis, sync or async.

An operation is a generator that yields commands (tuples; see ``scripts``) and
receives each reply. Redis failures are thrown into it as SessionUnavailable, so
the operation decides what a failure means; a WRONGTYPE reply (someone else's
key under our prefix) is sent in as a value, since only a read can meet it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

import redis
import redis.asyncio
from asgiref.sync import sync_to_async
from redis.exceptions import NoScriptError, RedisError, ResponseError

from django_redis_sessions import connection, scripts
from django_redis_sessions.exceptions import SessionUnavailable

T = TypeVar("T")
Command = tuple[Any, ...]


class WrongType(Exception):
    """The key holds a value of another Redis type."""


def _script_args(command: Command) -> tuple[scripts.Script, tuple[Any, ...]]:
    script: scripts.Script = command[1]
    return script, (1, *command[2:])


def _resume_after(steps: Generator[Command, Any, Any], exc: RedisError) -> Command:
    """Hand a failed command's error to the operation; return its next command."""
    if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
        return steps.send(WrongType(str(exc)))
    failure = SessionUnavailable(f"Redis failed: {type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return steps.throw(failure)


def execute(client: redis.Redis, command: Command) -> Any:
    if command[0] is scripts.EVALSHA:
        script, args = _script_args(command)
        try:
            return client.execute_command(scripts.EVALSHA, script.sha, *args)
        except NoScriptError:  # a restarted or flushed server: EVAL caches it again
            return client.execute_command(scripts.EVAL, script.source, *args)
    return client.execute_command(*command)


async def aexecute(client: redis.asyncio.Redis, command: Command) -> Any:
    if command[0] is scripts.EVALSHA:
        script, args = _script_args(command)
        try:
            return await client.execute_command(scripts.EVALSHA, script.sha, *args)
        except NoScriptError:
            return await client.execute_command(scripts.EVAL, script.source, *args)
    return await client.execute_command(*command)


def run(steps: Generator[Command, Any, T]) -> T:
    client = connection.get_client()
    try:
        command = next(steps)
        while True:
            try:
                reply = execute(client, command)
            except RedisError as exc:
                command = _resume_after(steps, exc)
            else:
                command = steps.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def arun(steps: Generator[Command, Any, T]) -> T:
    client = await connection.get_async_client()
    if client is None:  # only a sync client was configured: use it from a thread
        return await sync_to_async(run)(steps)
    try:
        command = next(steps)
        while True:
            try:
                reply = await aexecute(client, command)
            except RedisError as exc:
                command = _resume_after(steps, exc)
            else:
                command = steps.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
