"""Property-based tests: what JSON can hold round-trips; no cookie reaches Redis as garbage."""

from __future__ import annotations

from typing import Any

import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from django_redis_sessions import codec
from django_redis_sessions.session import SessionStore
from tests.twins import command_calls

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
# These keys have a meaning of their own (tested in test_session.py, test_users.py).
MEANINGFUL = ("_session_expiry", "_auth_user_id", "_drs_user_index")
session_keys = st.text(max_size=20).filter(lambda key: key not in MEANINGFUL)
sessions = st.dictionaries(session_keys, json_values, max_size=8)

fixtures_ok = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@fixtures_ok
@given(data=sessions)
def test_json_values_round_trip_exactly(data: dict[str, Any]) -> None:
    store = SessionStore()
    store.update(data)
    store.save()
    loaded = SessionStore(store.session_key).load()
    assert loaded == data
    assert codec.dumps(loaded) == codec.dumps(data)  # same types too: 1 stays 1, 1.0 stays 1.0


@fixtures_ok
@given(cookie=st.text(max_size=100) | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_arbitrary_cookies_never_reach_redis(r: redis.Redis, cookie: str) -> None:
    assume(not codec.is_valid_session_key(cookie))
    r.config_resetstat()
    store = SessionStore(cookie)
    assert store.session_key is None
    assert store.load() == {}
    assert store.exists(cookie) is False
    store.delete(cookie)
    assert command_calls(r) == 0


@fixtures_ok
@given(
    cookie=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=256
    )
)
def test_any_key_django_accepts_costs_one_get_and_no_write(r: redis.Redis, cookie: str) -> None:
    assert codec.is_valid_session_key(cookie)
    r.config_resetstat()
    store = SessionStore(cookie)
    assert store.load() == {}
    assert store.session_key is None
    assert command_calls(r) == 1
    assert r.dbsize() == 0
