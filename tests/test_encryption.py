"""Encryption at rest: sealed values, refusals, rotation and the re-encrypt command.

Every storage test runs through the sync and the async API against the suite's
real Redis (single server, or Sentinel/Cluster in the ``topologies`` env).
"""

from __future__ import annotations

import base64
import io
import logging
import sys
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import AsyncClient, Client, override_settings

from django_redis_sessions import codec, conf, crypto, plan, signals
from django_redis_sessions.driver import run
from django_redis_sessions.session import SessionStore
from tests.conftest import session_redis
from tests.twins import Ops, new_session

K1 = "k1:" + base64.urlsafe_b64encode(bytes(range(32))).decode()
K2 = "k2:" + base64.urlsafe_b64encode(bytes(range(100, 132))).decode()
SECRET_TEXT = "ada@example.com"


def encrypted(*keys: str, **overrides: Any) -> Any:
    return override_settings(SESSION_REDIS=session_redis(encryption_keys=list(keys), **overrides))


def plaintext(**overrides: Any) -> Any:
    base = {k: v for k, v in session_redis(**overrides).items() if not k.startswith("encryption")}
    return override_settings(SESSION_REDIS=base)


def enc() -> crypto.Config:
    """The encryption settings in effect (the test has encryption on)."""
    config = plan.get_plan().encryption
    assert config is not None
    return config


def raw_key(store: SessionStore) -> str:
    assert store.session_key is not None
    return codec.redis_key(conf.get_config().prefix, store.session_key)


def stored(r: redis.Redis, store: SessionStore) -> bytes:
    value: Any = r.get(raw_key(store))
    assert value is not None
    return value  # type: ignore[no-any-return]


def key_id(value: bytes) -> bytes:
    fmt, _, body = codec.split(value)
    assert fmt == codec.ENCRYPTED
    return body.split(b":", 1)[0]


@pytest.fixture
def suspicious(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        yield caplog


# Round trips ------------------------------------------------------------------------


def test_round_trip_is_encrypted_at_rest(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        store = new_session(ops, email=SECRET_TEXT, cart=[1, 2])
        value = stored(r, store)
        assert value.startswith(b"e1:1:k1:")
        assert SECRET_TEXT.encode() not in value and b"cart" not in value
        assert ops.load(SessionStore(store.session_key)) == {"email": SECRET_TEXT, "cart": [1, 2]}


def test_updates_keep_counting_versions(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        store = new_session(ops, n=1)
        again = SessionStore(store.session_key)
        ops.setitem(again, "n", 2)
        ops.save(again)
        assert stored(r, store).startswith(b"e1:2:k1:")
        assert ops.load(SessionStore(store.session_key)) == {"n": 2}
        again.clear()  # REPLACE builds the value server-side from format and body
        ops.setitem(again, "m", 3)
        ops.save(again)
        assert stored(r, store).startswith(b"e1:3:k1:")
        assert ops.load(SessionStore(store.session_key)) == {"m": 3}


def test_each_write_draws_a_fresh_nonce(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        store = new_session(ops, a=1)
        first = stored(r, store).split(b":", 2)[2]
        store.clear()
        ops.setitem(store, "a", 1)
        ops.save(store)
        assert stored(r, store).split(b":", 2)[2] != first


def test_unchanged_session_is_only_touched(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        store = new_session(ops, a=1)
        before = stored(r, store)
        again = SessionStore(store.session_key)
        ops.load(again)
        ops.save(again)
        assert stored(r, store) == before


def test_compressed_then_encrypted(ops: Ops, r: redis.Redis) -> None:
    data = {"text": "abc " * 2000}
    with encrypted(K1, compress_min_bytes=100):
        store = new_session(ops, **data)
        value = stored(r, store)
        assert len(value) < 1000  # compressed before it was encrypted
        keyring = enc().encryption_keys
        assert keyring is not None
        inner_fmt, inner = keyring.open(store._digest(), codec.split(value)[2])  # type: ignore[arg-type]
        assert inner_fmt == codec.COMPRESSED and zlib.decompress(inner).startswith(b'{"text"')
        assert ops.load(SessionStore(store.session_key)) == data


def test_cipher_cache_is_bounded(ops: Ops, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "CIPHER_CACHE", 2)
    with encrypted(K1):
        stores = [new_session(ops, n=n) for n in range(5)]
        keyring = enc().encryption_keys
        assert keyring is not None and len(keyring._ciphers) <= 2
        assert [ops.load(SessionStore(s.session_key)) for s in stores] == [
            {"n": n} for n in range(5)
        ]


def test_keyring_repr_names_ids_not_keys() -> None:
    with encrypted(K1, K2):
        config = enc()
        assert "k1, k2" in repr(config)
        assert K1.split(":")[1] not in repr(config)


# Refusals: logged, empty session, never a 500, nothing overwritten --------------------


def assert_refused(
    ops: Ops, r: redis.Redis, store: SessionStore, suspicious: pytest.LogCaptureFixture, why: str
) -> None:
    key, value = raw_key(store), stored(r, store)
    again = SessionStore(store.session_key)
    assert ops.load(again) == {}
    assert "Session data corrupted" in suspicious.text and why in suspicious.text
    assert store.session_key is not None and store.session_key not in suspicious.text
    ops.setitem(again, "new", 1)
    ops.save(again)  # a new session, under a new key
    assert again.session_key != store.session_key
    assert r.get(key) == value


def test_tampered_ciphertext_is_refused(
    ops: Ops, r: redis.Redis, suspicious: pytest.LogCaptureFixture
) -> None:
    with encrypted(K1):
        store = new_session(ops, is_admin=False)
        value = bytearray(stored(r, store))
        value[-20] ^= 1
        r.set(raw_key(store), bytes(value))
        assert_refused(ops, r, store, suspicious, "does not decrypt with key 'k1'")


@pytest.mark.parametrize(
    "body", [b"k1:short", b"k1", b"k9:" + bytes(40)], ids=["short", "no-id", "unknown-id"]
)
def test_malformed_encrypted_bodies_are_refused(
    ops: Ops, r: redis.Redis, suspicious: pytest.LogCaptureFixture, body: bytes
) -> None:
    with encrypted(K1):
        store = new_session(ops, a=1)
        r.set(raw_key(store), b"e1:1:" + body)
        assert_refused(ops, r, store, suspicious, "")


def test_unknown_key_id_is_refused(
    ops: Ops, r: redis.Redis, suspicious: pytest.LogCaptureFixture
) -> None:
    with encrypted(K2):
        store = new_session(ops, a=1)
    with encrypted(K1):
        assert_refused(ops, r, store, suspicious, "unknown key id b'k2'")


def test_a_wrong_key_under_a_known_id_is_refused(
    ops: Ops, r: redis.Redis, suspicious: pytest.LogCaptureFixture
) -> None:
    with encrypted(K1):
        store = new_session(ops, a=1)
    other = "k1:" + base64.urlsafe_b64encode(bytes(32)).decode()
    with encrypted(other):
        assert_refused(ops, r, store, suspicious, "does not decrypt")


def test_value_copied_under_another_session_is_refused(
    ops: Ops, r: redis.Redis, suspicious: pytest.LogCaptureFixture
) -> None:
    with encrypted(K1):
        admin = new_session(ops, is_admin=True)
        mallory = new_session(ops, is_admin=False)
        r.set(raw_key(mallory), stored(r, admin))
        assert_refused(ops, r, mallory, suspicious, "copied from another session")
        assert ops.load(SessionStore(admin.session_key)) == {"is_admin": True}


def test_inner_format_must_be_known(
    ops: Ops, r: redis.Redis, suspicious: pytest.LogCaptureFixture
) -> None:
    with encrypted(K1):
        store = new_session(ops, a=1)
        keyring = enc().encryption_keys
        assert keyring is not None
        r.set(raw_key(store), b"e1:1:" + keyring.seal(store._digest() or "", b"x9", b"{}"))
        assert_refused(ops, r, store, suspicious, "unrecognised encrypted body")


def test_plaintext_is_refused_under_require(
    ops: Ops, r: redis.Redis, suspicious: pytest.LogCaptureFixture
) -> None:
    with plaintext():
        injected = new_session(ops, is_admin=True)
    with encrypted(K1, encryption="require"):
        assert_refused(ops, r, injected, suspicious, '"encryption"] is "require"')


def test_encrypted_value_without_keys_is_refused(
    ops: Ops, r: redis.Redis, suspicious: pytest.LogCaptureFixture
) -> None:
    with encrypted(K1):
        store = new_session(ops, a=1)
    with plaintext():
        assert_refused(ops, r, store, suspicious, 'encryption_keys"] is not set')


def test_refusal_through_the_middleware_is_no_500(r: redis.Redis) -> None:
    with plaintext():
        client = Client()
        assert client.get("/set/role/admin/").status_code == 200
    with encrypted(K1, encryption="require"):
        response = client.get("/get/")
        assert response.status_code == 200
        assert response.json() == {}
        client.get("/set/theme/dark/")
        assert client.get("/get/").json() == {"theme": "dark"}
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        assert stored(r, SessionStore(cookie)).startswith(b"e1:1:k1:")


def test_refusal_through_the_async_middleware_is_no_500(r: redis.Redis) -> None:
    with plaintext():
        planted = new_session(Ops("sync"), role="admin")

    async def visit() -> tuple[int, Any, Any]:
        client = AsyncClient()
        client.cookies[settings.SESSION_COOKIE_NAME] = planted.session_key or ""
        response = await client.get("/aget/")
        await client.get("/aset/theme/dark/")
        return response.status_code, response.json(), (await client.get("/aget/")).json()

    with encrypted(K1, encryption="require"):
        assert async_to_sync(visit)() == (200, {}, {"theme": "dark"})
        assert stored(r, planted).startswith(b"j1:1:")  # left as it was


# Switching on, and rotation ------------------------------------------------------------


def test_plaintext_is_read_then_rewritten_encrypted_under_write(ops: Ops, r: redis.Redis) -> None:
    with plaintext():
        store = new_session(ops, user="ada")
        assert stored(r, store).startswith(b"j1:1:")
    with encrypted(K1):  # "write" is the default with keys
        assert enc().encryption == "write"
        again = SessionStore(store.session_key)
        assert ops.load(again) == {"user": "ada"}
        ops.save(again)  # unchanged data, yet rewritten: a touch would keep plaintext
        assert stored(r, store).startswith(b"e1:2:k1:")
        assert ops.load(SessionStore(store.session_key)) == {"user": "ada"}


def test_rotation_moves_values_on_their_next_save(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        store = new_session(ops, user="ada")
    with encrypted(K1, K2):  # step 1: K2 known everywhere, decrypt-only
        assert ops.load(SessionStore(store.session_key)) == {"user": "ada"}
        fresh = new_session(ops, x=1)
        assert key_id(stored(r, fresh)) == b"k1"
    with encrypted(K2, K1):  # step 2: K2 first
        again = SessionStore(store.session_key)
        ops.setitem(again, "seen", 1)
        ops.save(again)
        assert key_id(stored(r, store)) == b"k2"
        assert key_id(stored(r, fresh)) == b"k1"
    with encrypted(K2):  # K1 dropped: what was not moved is lost
        assert ops.load(SessionStore(store.session_key)) == {"user": "ada", "seen": 1}
        assert ops.load(SessionStore(fresh.session_key)) == {}


def test_read_mode_reads_both_and_writes_plaintext(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        sealed = new_session(ops, a=1)
    with plaintext():
        plain = new_session(ops, b=2)
    with encrypted(K1, encryption="read"):  # rolling out keys, or switching off
        assert ops.load(SessionStore(plain.session_key)) == {"b": 2}
        fresh = new_session(ops, c=3)
        assert stored(r, fresh).startswith(b"j1:1:")
        again = SessionStore(sealed.session_key)
        assert ops.load(again) == {"a": 1}
        ops.save(again)  # unchanged, yet rewritten in plaintext
        assert stored(r, sealed) == b'j1:2:{"a":1}'


# Concurrency: the SAVE script's conflict reply is decrypted before the merge ----------


def test_concurrent_saves_merge_encrypted_values(ops: Ops, r: redis.Redis) -> None:
    conflicts: list[int] = []

    def receiver(sender: Any, attempt: int, **kwargs: Any) -> None:
        conflicts.append(attempt)

    signals.save_conflict.connect(receiver)
    try:
        with encrypted(K1, compress_min_bytes=10):
            store = new_session(ops, shared=0)
            a, b = SessionStore(store.session_key), SessionStore(store.session_key)
            ops.load(a)
            ops.load(b)
            ops.setitem(a, "cart", ["book"] * 20)
            ops.setitem(b, "banner", True)
            ops.save(b)
            ops.save(a)
            assert conflicts == [1]
            assert ops.load(SessionStore(store.session_key)) == {
                "shared": 0,
                "cart": ["book"] * 20,
                "banner": True,
            }
            assert stored(r, store).startswith(b"e1:3:k1:")
    finally:
        signals.save_conflict.disconnect(receiver)


def test_concurrent_rotation_merges_across_keys(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        store = new_session(ops, shared=0)
    with encrypted(K2, K1):
        a, b = SessionStore(store.session_key), SessionStore(store.session_key)
        ops.load(a)
        ops.load(b)
        ops.setitem(b, "b", 1)
        ops.save(b)
        ops.setitem(a, "a", 1)
        ops.save(a)
        assert ops.load(SessionStore(store.session_key)) == {"shared": 0, "a": 1, "b": 1}
        assert key_id(stored(r, store)) == b"k2"


def test_threads_share_the_keyring(r: redis.Redis) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(30):
                store = SessionStore()
                store["n"] = [n, i]
                store.save()
                assert SessionStore(store.session_key).load() == {"n": [n, i]}
        except BaseException as exc:  # reported below
            errors.append(exc)

    with encrypted(K1):
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


# manage.py reencrypt_sessions ----------------------------------------------------------


def reencrypt(*args: str) -> str:
    out = io.StringIO()
    call_command("reencrypt_sessions", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_reencrypt_moves_every_session_to_the_first_key(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        old = [new_session(ops, n=n) for n in range(7)]
    with plaintext():
        plain = new_session(ops, p=1)
    with encrypted(K2, K1):
        new_session(ops, c=1)  # already under the first key
        corrupt = new_session(ops, c=2)
        r.set(raw_key(corrupt), b"j1:1:not json")
        prefix = conf.get_config().prefix
        r.set(prefix + "not-a-session-digest-of-32-chars", b"x")  # same length, not hex
        before = {raw_key(s): (r.pttl(raw_key(s)), stored(r, s)) for s in [*old, plain]}
        out = reencrypt("--batch-size", "3")
        assert out.strip() == (
            "10 sessions: 8 re-encrypted, 1 already current, 1 unreadable, 1 other keys skipped"
        )
        for store in [*old, plain]:
            value = stored(r, store)
            assert key_id(value) == b"k2"
            pttl, was = before[raw_key(store)]
            assert codec.split(value)[1] == codec.split(was)[1]  # version kept
            assert 0 < pttl - r.pttl(raw_key(store)) < 60_000  # expiry kept
        assert r.get(raw_key(corrupt)) == b"j1:1:not json"
    with encrypted(K2):  # K1 can go now
        assert [ops.load(SessionStore(s.session_key)) for s in old] == [{"n": n} for n in range(7)]
        assert ops.load(SessionStore(plain.session_key)) == {"p": 1}
        assert reencrypt().strip() == (
            "10 sessions: 0 re-encrypted, 9 already current, 1 unreadable, 1 other keys skipped"
        )


def test_reencrypt_dry_run_writes_nothing(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        store = new_session(ops, a=1)
    with encrypted(K2, K1):
        value = stored(r, store)
        assert reencrypt("--dry-run").strip() == "1 sessions: 1 to re-encrypt, 0 already current"
        assert stored(r, store) == value


def test_reencrypt_decrypts_everything_under_read(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        sealed = [new_session(ops, n=n) for n in range(3)]
    with plaintext():
        plain = new_session(ops, p=1)
    with encrypted(K1, encryption="read"):
        assert reencrypt("--dry-run").strip() == "4 sessions: 3 to decrypt, 1 already current"
        assert reencrypt().strip() == "4 sessions: 3 decrypted, 1 already current"
        assert [stored(r, s) for s in sealed] == [b'j1:1:{"n":%d}' % n for n in range(3)]
        assert stored(r, plain) == b'j1:1:{"p":1}'
    with plaintext():  # the keys can go
        assert ops.load(SessionStore(sealed[2].session_key)) == {"n": 2}


def test_reencrypt_leaves_plaintext_alone_under_require(ops: Ops, r: redis.Redis) -> None:
    with plaintext():
        plain = new_session(ops, is_admin=True)
    with encrypted(K1, encryption="require"):
        assert reencrypt().strip() == "1 sessions: 0 re-encrypted, 0 already current, 1 unreadable"
        assert stored(r, plain).startswith(b"j1:")


def test_reencrypt_needs_keys_and_a_positive_batch() -> None:
    with plaintext(), pytest.raises(CommandError, match="encryption_keys"):
        reencrypt()
    with encrypted(K1), pytest.raises(CommandError, match="batch-size"):
        reencrypt("--batch-size", "0")


def test_reencrypt_reports_redis_failures(r: redis.Redis) -> None:
    with (
        encrypted(K1, url="redis://127.0.0.1:1/0"),
        pytest.raises(CommandError, match=r"Redis failed .*; so far: 0 sessions"),
    ):
        reencrypt()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reencrypt_failure_ends_the_progress_line(r: redis.Redis) -> None:
    err = Terminal()
    with encrypted(K1, url="redis://127.0.0.1:1/0"), pytest.raises(CommandError):
        call_command("reencrypt_sessions", stdout=io.StringIO(), stderr=err)
    assert err.getvalue() == "\n"


def test_reencrypt_shows_progress_on_a_terminal(ops: Ops, r: redis.Redis) -> None:

    with encrypted(K1):
        new_session(ops, a=1)
    with encrypted(K2, K1):
        err, out = Terminal(), io.StringIO()
        call_command("reencrypt_sessions", stdout=out, stderr=err)
        assert "\r1 sessions: 1 re-encrypted" in err.getvalue()
        assert err.getvalue().endswith("\n")
        assert out.getvalue().strip() == "1 sessions: 1 re-encrypted, 0 already current"


def test_reseal_follows_a_save_that_came_first(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        store = new_session(ops, a=1)
        read_by_scan = stored(r, store)
        again = SessionStore(store.session_key)
        ops.setitem(again, "a", 2)
        ops.save(again)  # version 2, between the batched read and the reseal
    with encrypted(K2, K1):
        config = enc()
        digest = store._digest() or ""
        assert run(crypto.reseal(config, raw_key(store), digest, read_by_scan)) == crypto.RESEALED
        assert stored(r, store).startswith(b"e1:2:k2:")
        assert ops.load(SessionStore(store.session_key)) == {"a": 2}


def test_reseal_outcomes_for_gone_and_busy_sessions(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        store = new_session(ops, a=1)
        value = stored(r, store)
    with encrypted(K2, K1):
        config = enc()
        key, digest = raw_key(store), store._digest() or ""
        # A session rewritten under every attempt: given up on, left to its writers.
        steps = crypto.reseal(config, key, digest, value)
        assert next(steps)[0] == "EVALSHA"
        for _ in range(crypto.RESEAL_ATTEMPTS - 1):
            assert steps.send(2)[0] == "GET"
            assert steps.send(value)[0] == "EVALSHA"
        with pytest.raises(StopIteration) as busy:
            steps.send(2)
        assert busy.value.value == crypto.CHANGING
        # Deleted between the batched read and the reseal, or before the read.
        r.delete(key)
        assert run(crypto.reseal(config, key, digest, value)) == crypto.GONE
        assert run(crypto.reseal(config, key, digest, None)) == crypto.GONE


def test_reencrypt_skips_what_is_not_a_session(r: redis.Redis) -> None:
    with encrypted(K1):
        prefix = conf.get_config().prefix
        for n in range(50):  # empty SCAN pages with count=1
            r.set(f"other:{n}", n)
        r.set(prefix + "f" * 31 + "g", b"j1:1:{}")
        assert reencrypt("--batch-size", "1").strip() == (
            "0 sessions: 0 re-encrypted, 0 already current, 1 other keys skipped"
        )
        r.hset(prefix + "f" * 32, "a", "1")  # a session-like name holding a hash
        assert reencrypt().strip() == (
            "1 sessions: 0 re-encrypted, 0 already current, 1 unreadable, 1 other keys skipped"
        )


def test_session_digest_of_redis_keys() -> None:
    with encrypted(K1, prefix="app:"):
        config = enc()
        assert crypto.session_digest(config, "app:" + "a" * 32) == "a" * 32
        assert crypto.session_digest(config, "app:" + "A" * 32) is None
        assert crypto.session_digest(config, "other:" + "a" * 32) is None
        assert crypto.is_current(crypto.Config(None, None, None, "x:"), codec.PLAIN, b"{}")


def test_reseal_counts_a_foreign_type_as_unreadable(r: redis.Redis) -> None:
    with encrypted(K1):
        config = enc()
        key = config.prefix + "0" * 32
        r.hset(key, "a", "1")
        assert run(crypto.reseal(config, key, "0" * 32, None)) == crypto.UNREADABLE


# Settings: ImproperlyConfigured naming the setting, never the key ----------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"encryption_keys": K1}, 'SESSION_REDIS["encryption_keys"]: must be a list'),
        ({"encryption_keys": [42]}, "entry 0 must be a '<key id>:<key>' string"),
        ({"encryption_keys": ["nocolon"]}, "entry 0 must be a '<key id>:<key>' string"),
        (
            {"encryption_keys": [K1, "bad id:" + K1[3:]]},
            "entry 1: the key id, before the first ':', must be",
        ),
        ({"encryption_keys": [":" + K1[3:]]}, "entry 0: the key id, before the first ':', must be"),
        ({"encryption_keys": ["k1:" + base64.urlsafe_b64encode(bytes(16)).decode()]}, "32 random"),
        (
            {"encryption_keys": ["k1:not base64!"]},
            "entry 0: the key, after the first ':', must be 32 random bytes",
        ),
        (
            {"encryption_keys": [K1, "k1:" + K2[3:]]},
            "entry 1 repeats the key id of an earlier entry",
        ),
        ({"encryption": "require"}, "SESSION_REDIS[\"encryption\"]: 'require' needs keys"),
        ({"encryption": "write", "encryption_keys": []}, "'write' needs keys"),
        ({"encryption": "on", "encryption_keys": [K1]}, "must be 'read', 'write' or 'require'"),
        ({"encryption": "read"}, "'read' needs keys"),
    ],
)
def test_bad_encryption_settings(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured) as failure:
        plan.parse(raw)
    assert message in str(failure.value)
    assert K1[3:] not in str(failure.value) and K2[3:] not in str(failure.value)


def test_encryption_defaults() -> None:
    assert plan.parse({}).encryption is None
    assert plan.parse({"encryption_keys": []}).encryption is None
    config = plan.parse({"encryption_keys": (K1, K2.rstrip("="))}).encryption
    assert config is not None and config.encryption == "write"
    assert config.encryption_keys is not None and config.encryption_keys.current == b"k1"
    required = plan.parse({"encryption_keys": [K1], "encryption": "require"}).encryption
    assert required is not None and required.encryption == "require"


def test_missing_cryptography_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ImproperlyConfigured, match=r"django-redis-sessions\[encryption\]"):
        plan.parse({"encryption_keys": [K1]})


def test_the_documented_command_makes_a_valid_key() -> None:
    import subprocess

    command = crypto.GENERATE_KEY.replace("python", sys.executable, 1)
    key = subprocess.run(command, shell=True, check=True, capture_output=True, text=True)
    config = plan.parse({"encryption_keys": [key.stdout.strip()]}).encryption
    assert config is not None and config.encryption_keys is not None
    assert config.encryption_keys.current == b"k1"


def _pieces(secret: str, size: int = 6) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


@pytest.mark.parametrize(
    "entry",
    [
        K1[3:] + ":k1",  # "<key>:<key id>", the wrong way round
        K1[3:].rstrip("=") + ":k1",
        "abcdefghijklmnopqrstuvwxyz012345:k1",  # a secret that looks like a key id
        "k1:" + K1[3:13],  # a key cut short
    ],
)
def test_a_bad_entry_names_the_setting_and_position_never_the_key(entry: str) -> None:
    with pytest.raises(ImproperlyConfigured) as failure:
        plan.parse({"encryption_keys": [K2, entry]})
    message = str(failure.value)
    assert message.startswith('SESSION_REDIS["encryption_keys"]: entry 1')
    secret = max(entry.split(":"), key=len)
    assert not [piece for piece in _pieces(secret) if piece in message], message


def test_a_key_pasted_as_the_mode_is_not_printed() -> None:
    with pytest.raises(ImproperlyConfigured) as failure:
        plan.parse({"encryption_keys": [K1], "encryption": K2})
    message = str(failure.value)
    assert message.startswith('SESSION_REDIS["encryption"]: must be')
    assert not [piece for piece in _pieces(K2) if piece in message], message


# What encryption protects, and what it does not (README, "Encryption at rest") -------
# The limits are pinned as they are, so that the README cannot claim more.


def test_limit_an_older_value_of_the_same_session_replays(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1, encryption="require"):
        store = new_session(ops, is_admin=True)
        older = stored(r, store)
        ops.setitem(store, "is_admin", False)
        ops.save(store)
        newer = stored(r, store)
        # Whoever can write to Redis puts the older ciphertext back, even under
        # the newer version number: the header's version is not authenticated.
        fmt, version, _ = codec.split(newer)
        r.set(raw_key(store), codec.join(fmt, version, codec.split(older)[2]))
        assert ops.load(SessionStore(store.session_key))["is_admin"] is True


def test_limit_a_value_planted_before_the_switch_is_sealed_by_reencrypt(
    ops: Ops, r: redis.Redis
) -> None:
    with plaintext():
        planted = new_session(ops, is_admin=True)  # written by whoever could write to Redis
    with encrypted(K1, encryption="write"):
        assert "1 re-encrypted" in reencrypt()
    with encrypted(K1, encryption="require"):
        assert ops.load(SessionStore(planted.session_key)) == {"is_admin": True}


def test_protects_a_value_forged_without_the_key(
    ops: Ops, r: redis.Redis, suspicious: pytest.LogCaptureFixture
) -> None:
    with encrypted(K1):
        store = new_session(ops, is_admin=False)
    forger = crypto.Keyring([(b"k1", bytes(32))])  # the right id, a guessed key
    sealed = forger.seal(codec.digest(store.session_key or ""), codec.PLAIN, b'{"is_admin":true}')
    with encrypted(K1, encryption="require"):
        r.set(raw_key(store), codec.join(codec.ENCRYPTED, b"2", sealed))
        assert_refused(ops, r, store, suspicious, "does not decrypt with key 'k1'")


def test_protects_against_moving_a_value_to_another_session(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1, encryption="require"):
        admin = new_session(ops, is_admin=True)
        mallory = new_session(ops, is_admin=False)
        r.set(raw_key(mallory), stored(r, admin))
        assert ops.load(SessionStore(mallory.session_key)) == {}


def test_protects_the_contents_from_whoever_reads_redis(ops: Ops, r: redis.Redis) -> None:
    with encrypted(K1):
        store = new_session(ops, email=SECRET_TEXT)
        assert SECRET_TEXT.encode() not in stored(r, store)
        assert b"email" not in stored(r, store)
