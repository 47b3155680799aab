"""``manage.py reencrypt_sessions``: move every stored session to the first key.

SCAN (on a Cluster, on every primary) in batches, one pipelined GET per batch,
then each session that is plaintext or under another key is sealed again with
the first of ``SESSION_REDIS["encryption_keys"]`` by a script that writes only
if no request saved the session meanwhile; its version and expiry stay. Under
``"encryption": "read"`` every session is decrypted instead.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import redis
import redis.cluster
from django.core.management.base import BaseCommand, CommandError, CommandParser
from redis.exceptions import ResponseError

from django_redis_sessions import connection, crypto, plan, scripts
from django_redis_sessions.driver import run
from django_redis_sessions.exceptions import SessionUnavailable

DEFAULT_BATCH = 500
OUTCOMES = (crypto.RESEALED, crypto.CURRENT, crypto.UNREADABLE, crypto.GONE, crypto.CHANGING)
_GLOB_SPECIALS = re.compile(r"([*?\[\]\\])")


class Command(BaseCommand):
    help = (
        'Re-encrypt stored sessions with the first of SESSION_REDIS["encryption_keys"], so '
        "that older keys can be dropped; plaintext sessions are encrypted too unless "
        'SESSION_REDIS["encryption"] is "require" (then they are counted as unreadable). '
        'Under "read", decrypt every session instead (switching encryption off).'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH,
            help=f"keys per SCAN call and per pipelined read (default {DEFAULT_BATCH})",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be re-encrypted; write nothing"
        )

    def handle(self, *args: Any, batch_size: int, dry_run: bool, **options: Any) -> None:
        config = plan.get_plan().encryption
        if config is None or config.encryption_keys is None:
            raise CommandError(
                'SESSION_REDIS["encryption_keys"] is not set: there is no key to encrypt with.'
            )
        if batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, got {batch_size}.")
        counts: Counter[str] = Counter()
        decrypt = config.encryption == "read"
        done = {
            (False, False): crypto.RESEALED,
            (False, True): "to re-encrypt",
            (True, False): "decrypted",
            (True, True): "to decrypt",
        }[decrypt, dry_run]
        progress = self.stderr.isatty()
        try:
            for node in _nodes(connection.get_client()):
                for batch in _batches(node, _pattern(config.prefix), batch_size):
                    self._reseal(config, node, batch, counts, dry_run)
                    if progress:
                        self.stderr.write(f"\r{_summary(counts, done)}", ending="")
        except (SessionUnavailable, redis.RedisError) as exc:
            if progress:
                self.stderr.write("")
            raise CommandError(f"Redis failed ({exc}); so far: {_summary(counts, done)}") from exc
        if progress:
            self.stderr.write("")
        self.stdout.write(_summary(counts, done))

    def _reseal(
        self,
        config: crypto.Config,
        node: redis.Redis,
        batch: list[str],
        counts: Counter[str],
        dry_run: bool,
    ) -> None:
        keys = [(key, crypto.session_digest(config, key)) for key in batch]
        sessions = [(key, digest) for key, digest in keys if digest is not None]
        counts["other keys"] += len(keys) - len(sessions)
        values = _read(node, [key for key, _ in sessions])
        for (key, digest), value in zip(sessions, values, strict=True):
            counts[run(crypto.reseal(config, key, digest, value, dry_run=dry_run))] += 1


def _nodes(client: Any) -> Iterator[redis.Redis]:
    """A client for each server holding sessions: every primary of a Cluster."""
    if isinstance(client, redis.cluster.RedisCluster):
        for node in cast(Any, client).get_primaries():
            yield client.get_redis_connection(node)
    else:
        yield client


def _pattern(prefix: str) -> str:
    return _GLOB_SPECIALS.sub(r"\\\1", prefix) + "?" * 32


def _batches(node: redis.Redis, pattern: str, size: int) -> Iterator[list[str]]:
    cursor: Any = 0
    while True:
        cursor, keys = node.scan(cursor, match=pattern, count=size)
        if keys:
            yield [
                key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key
                for key in keys
            ]
        if int(cursor) == 0:
            return


def _read(node: redis.Redis, keys: list[str]) -> list[Any]:
    """The batch's values in one round trip; None where the engine should read it itself.

    On a Cluster a key can move between SCAN and GET: the MOVED reply becomes
    None, so the engine's own driver reads it from wherever it lives now.
    """
    if not keys:
        return []
    with node.pipeline(transaction=False) as pipe:
        for key in keys:
            cast(Any, pipe).execute_command(scripts.GET, key)
        replies = pipe.execute(raise_on_error=False)
    return [
        reply if not isinstance(reply, Exception) or _wrong_type(reply) else None
        for reply in replies
    ]


def _wrong_type(reply: Exception) -> bool:
    return isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE")


def _summary(counts: Counter[str], done: str) -> str:
    seen = sum(counts[outcome] for outcome in OUTCOMES)
    names = {crypto.RESEALED: done}
    parts = [
        f"{counts[outcome]} {names.get(outcome, outcome)}"
        for outcome in OUTCOMES
        if counts[outcome] or outcome in (crypto.RESEALED, crypto.CURRENT)
    ]
    if counts["other keys"]:
        parts.append(f"{counts['other keys']} other keys skipped")
    return f"{seen} sessions: " + ", ".join(parts)
