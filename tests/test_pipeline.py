"""Several commands in one round trip: the driver's ``scripts.PIPELINE`` and
``hooks.together``, which sends two operations' first commands that way.

Real servers on every topology; on a Cluster each run of commands in one slot
is its own round trip.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.test import override_settings

from django_redis_sessions import connection, driver, hooks, scripts
from django_redis_sessions.driver import WrongType
from django_redis_sessions.exceptions import SessionUnavailable
from testproject.redis_server import free_port
from tests.conftest import session_redis
from tests.twins import Sends

Steps = Generator[tuple[Any, ...], Any, Any]
MODES = ("sync", "async")
A, B = "session:pipe-a", "session:pipe-b"
BOOM = scripts.Script("boom", "return redis.error_reply('boom')\n")
ECHO = scripts.Script("echo", "return ARGV[1]\n")


def drive(mode: str, steps: Steps) -> Any:
    if mode == "async":

        async def arun() -> Any:
            return await driver.arun(steps)

        return async_to_sync(arun)()
    return driver.run(steps)


def counted(mode: str, sends: Sends, steps: Steps) -> Any:
    """``drive``, counting round trips once the client is connected (in its own loop)."""
    warm_up = one((scripts.EXISTS, A))
    if mode == "async":

        async def arun() -> Any:
            await driver.arun(warm_up)
            sends.count = 0
            return await driver.arun(steps)

        return async_to_sync(arun)()
    driver.run(warm_up)
    sends.count = 0
    return driver.run(steps)


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> Sends:
    return Sends(monkeypatch)


def one(*commands: tuple[Any, ...]) -> Steps:
    replies = yield (scripts.PIPELINE, *commands)
    return replies


@pytest.mark.parametrize("mode", MODES)
def test_replies_come_in_order_each_as_alone(mode: str, r: redis.Redis) -> None:
    replies = drive(
        mode,
        one(
            (scripts.SET, A, "1"),
            (scripts.GET, A),
            (scripts.HGETALL, A),  # WRONGTYPE: a value, as for one command
            ("INCRBY", A, "x"),  # an error reply: the SessionUnavailable it would raise
            (scripts.EVALSHA, ECHO, B, "echo"),
            (scripts.SET, B, "2", scripts.NX),
        ),
    )
    assert replies[:2] == [True, b"1"]
    assert isinstance(replies[2], WrongType)
    assert isinstance(replies[3], SessionUnavailable)
    assert "not an integer" in str(replies[3])
    assert replies[4:] == [b"echo", True]
    assert r.get(B) == b"2"


@pytest.mark.parametrize("mode", MODES)
def test_one_round_trip_per_slot(mode: str, sends: Sends, redis_topology: str) -> None:
    replies = counted(mode, sends, one((scripts.SET, A, "1"), (scripts.GET, A), (scripts.GET, B)))
    assert replies == [True, b"1", None]
    # A and B are in different slots: on a Cluster, one run each.
    assert sends.count == (2 if redis_topology == "cluster" else 1)


@pytest.mark.parametrize("mode", MODES)
def test_a_lost_script_is_sent_again_by_its_source(
    mode: str, r: redis.Redis, sends: Sends, redis_topology: str
) -> None:
    r.script_flush()
    replies = counted(mode, sends, one((scripts.EVALSHA, ECHO, A, "x"), (scripts.SET, A, "1")))
    assert replies == [b"x", True]
    if redis_topology != "cluster":  # the cluster client may ask for its slot map first
        assert sends.count == 2
    assert isinstance(drive(mode, one((scripts.EVALSHA, BOOM, A)))[0], SessionUnavailable)


@pytest.mark.parametrize("mode", MODES)
def test_writes_not_replicated_fail_reads_do_not(mode: str, r: redis.Redis) -> None:
    with override_settings(SESSION_REDIS=session_redis(wait_replicas=5, wait_timeout=20)):
        replies = drive(mode, one((scripts.SET, A, "1"), (scripts.GET, A), ("INCRBY", B, "x")))
    written, read, failed = replies
    assert isinstance(written, SessionUnavailable)
    assert "replicas" in str(written)
    assert read == b"1"  # written to the primary all the same
    assert "not an integer" in str(failed)  # its own error, not the WAIT's


def test_a_failed_wait_fails_the_writes(r: redis.Redis) -> None:
    client = connection.get_client()
    # WAIT refuses a negative timeout: its error is the writes' outcome.
    replies = driver.execute(client, (scripts.PIPELINE, (scripts.SET, A, "1")), (1, -1))
    assert isinstance(replies[0], SessionUnavailable)
    assert "timeout" in str(replies[0]).lower()
    with pytest.raises(redis.ResponseError, match=r"(?i)timeout"):
        driver.execute(client, (scripts.SET, A, "1"), (1, -1))


@pytest.mark.parametrize("mode", MODES)
def test_an_unreachable_server_fails_the_whole_pipeline(mode: str) -> None:
    nowhere = session_redis(url=f"redis://127.0.0.1:{free_port()}/0")
    with override_settings(SESSION_REDIS=nowhere), pytest.raises(SessionUnavailable):
        drive(mode, one((scripts.SET, A, "1"), (scripts.GET, A)))


# hooks.together ------------------------------------------------------------------------


class Op:
    """Steps that send ``commands`` one by one and note what became of them."""

    def __init__(self, *commands: tuple[Any, ...], catch: bool = False) -> None:
        self.commands = commands
        self.catch = catch
        self.replies: list[Any] = []
        self.closed = False

    def steps(self) -> Steps:
        try:
            for command in self.commands:
                try:
                    self.replies.append((yield command))
                except SessionUnavailable as exc:
                    if not self.catch:
                        raise
                    self.replies.append(exc)
        except GeneratorExit:
            self.closed = True
            raise
        return len(self.replies)


@pytest.mark.parametrize("mode", MODES)
def test_together_sends_both_first_commands_at_once(
    mode: str, r: redis.Redis, sends: Sends
) -> None:
    first = Op((scripts.SET, A, "1"), (scripts.GET, A))
    then = Op((scripts.GET, A), (scripts.DEL, A))
    assert counted(mode, sends, hooks.together(first.steps(), then.steps())) == (2, 2)
    # first's SET ran before then's GET; first ends before then goes on.
    assert first.replies == [True, b"1"]
    assert then.replies == [b"1", 1]
    assert sends.count == 3


@pytest.mark.parametrize("mode", MODES)
def test_together_with_nothing_to_pair(mode: str, r: redis.Redis) -> None:
    only = Op((scripts.SET, A, "1"))
    assert drive(mode, hooks.together(Op().steps(), only.steps())) == (0, 1)
    only = Op((scripts.GET, A))
    assert drive(mode, hooks.together(only.steps(), Op().steps())) == (1, 0)
    assert only.replies == [b"1"]


@pytest.mark.parametrize("mode", MODES)
def test_together_runs_the_driver_own_commands_alone(mode: str, r: redis.Redis) -> None:
    asks = Op((scripts.IFEQ_SUPPORTED,), (scripts.GET, A))
    writes = Op((scripts.SET, A, "1"))
    assert drive(mode, hooks.together(writes.steps(), asks.steps())) == (1, 2)
    assert isinstance(asks.replies[0], bool) and asks.replies[1] == b"1"
    asks, writes = Op((scripts.IFEQ_SUPPORTED,)), Op((scripts.SET, A, "2"))
    assert drive(mode, hooks.together(asks.steps(), writes.steps())) == (1, 1)
    assert r.get(A) == b"2"


@pytest.mark.parametrize("mode", MODES)
def test_together_answers_questions_first(mode: str, r: redis.Redis, sends: Sends) -> None:
    """A question that changes nothing (may the server do SET IFEQ?) does not keep
    ``then``'s write out of the pair."""
    first = Op((scripts.GET, A))
    then = Op((scripts.IFEQ_SUPPORTED,), (scripts.IFEQ_SUPPORTED,), (scripts.SET, A, "1"))
    assert counted(mode, sends, hooks.together(first.steps(), then.steps())) == (1, 3)
    assert first.replies == [None]  # it ran first
    assert sends.count == 1
    asks = Op((scripts.IFEQ_SUPPORTED,))
    assert drive(mode, hooks.together(Op((scripts.GET, A)).steps(), asks.steps())) == (1, 1)


def test_together_hands_a_failed_question_to_its_steps(r: redis.Redis) -> None:
    first = Op((scripts.GET, A), catch=True)
    then = Op((scripts.IFEQ_SUPPORTED,), catch=True)
    nowhere = session_redis(url=f"redis://127.0.0.1:{free_port()}/0")
    with override_settings(SESSION_REDIS=nowhere):
        assert driver.run(hooks.together(first.steps(), then.steps())) == (1, 1)
    # then met the failure and ended; first was sent alone, and failed too.
    assert all(isinstance(op.replies[0], SessionUnavailable) for op in (first, then))


@pytest.mark.parametrize("mode", MODES)
def test_together_when_first_fails(mode: str, r: redis.Redis) -> None:
    first, then = Op(("INCRBY", B, "x")), Op((scripts.SET, A, "1"), (scripts.GET, A))
    with pytest.raises(SessionUnavailable, match="not an integer"):
        drive(mode, hooks.together(first.steps(), then.steps()))
    assert then.closed and then.replies == []
    assert r.get(A) == b"1"  # sent with it: what it did stays for the caller to judge
    # A driver's own command first, failing alone: then is closed unsent.
    first, then = Op((scripts.IFEQ_SUPPORTED,), ("INCRBY", B, "x")), Op((scripts.DEL, A))
    with pytest.raises(SessionUnavailable):
        drive(mode, hooks.together(first.steps(), then.steps()))
    assert then.closed and r.get(A) == b"1"


@pytest.mark.parametrize("mode", MODES)
def test_together_hands_failures_to_the_steps_they_belong_to(mode: str, r: redis.Redis) -> None:
    first = Op((scripts.SET, B, "x"), ("INCRBY", B, "1"), (scripts.GET, B), catch=True)
    then = Op(("INCRBY", B, "x"), (scripts.GET, B), catch=True)
    assert drive(mode, hooks.together(first.steps(), then.steps())) == (3, 2)
    assert isinstance(first.replies[1], SessionUnavailable)
    assert first.replies[2] == b"x"  # it went on after meeting the failure
    assert isinstance(then.replies[0], SessionUnavailable)
    assert then.replies[1] == b"x"


def test_together_sends_nothing_when_then_cannot_start(r: redis.Redis) -> None:
    first = Op((scripts.SET, A, "1"))

    def refuses() -> Steps:
        yield from ()  # a generator, raising before its first command
        raise ValueError("too large")

    with pytest.raises(ValueError, match="too large"):
        driver.run(hooks.together(first.steps(), refuses()))
    assert first.closed and r.get(A) is None


@pytest.mark.parametrize("mode", MODES)
def test_together_when_the_server_is_unreachable(mode: str) -> None:
    first, then = Op((scripts.SET, A, "1"), catch=True), Op((scripts.GET, A), catch=True)
    with override_settings(SESSION_REDIS=session_redis(url=f"redis://127.0.0.1:{free_port()}/0")):
        assert drive(mode, hooks.together(first.steps(), then.steps())) == (1, 1)
    assert all(isinstance(op.replies[0], SessionUnavailable) for op in (first, then))


def test_closing_together_closes_what_it_runs() -> None:
    first, then = Op((scripts.GET, A)), Op((scripts.GET, A), (scripts.GET, B))
    steps = hooks.together(first.steps(), then.steps())
    assert next(steps)[0] is scripts.PIPELINE
    assert steps.send([None, None]) == (scripts.GET, B)  # then's second command, alone
    steps.close()
    assert then.closed
