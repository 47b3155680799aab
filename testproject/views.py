"""The demo pages. Each one says which app server answered (see context_processors)."""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from django_redis_sessions import codec, conf, connection, users

ITEM_PREFIX = "item:"
MAX_ITEMS = 50


def _server_name() -> str:
    return str(getattr(settings, "SERVER_NAME", ""))


def counter(request: HttpRequest) -> HttpResponse:
    visits = request.session.get("visits", 0) + 1
    request.session["visits"] = visits
    return render(request, "testproject/counter.html", {"visits": visits})


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    # Never touches the session: used to wait for a server to be up.
    return HttpResponse(f"ok {_server_name()}\n", content_type="text/plain")


# Concurrent items ----------------------------------------------------------------
#
# Each request of a run stores its item under a top-level key of its own
# ("item:<n>"): the engine merges concurrent saves key by key, so every item
# survives although all the requests load the same version of the session and
# then save over each other.


def _item_count(raw: str | None, default: int = 8) -> int:
    try:
        n = int(raw) if raw else default
    except ValueError:
        return default
    return max(1, min(n, MAX_ITEMS))


def _items(session: Any) -> list[dict[str, Any]]:
    found = []
    for key, value in session.items():
        if key.startswith(ITEM_PREFIX):
            found.append({"n": int(key[len(ITEM_PREFIX) :]), **value})
    return sorted(found, key=lambda item: item["n"])


def items(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "testproject/items.html",
        {"count": _item_count(request.GET.get("n")), "max_items": MAX_ITEMS},
    )


@require_POST
def items_clear(request: HttpRequest) -> JsonResponse:
    for key in [key for key, _ in request.session.items() if key.startswith(ITEM_PREFIX)]:
        del request.session[key]
    # Always a change, so the session (and its cookie) exists before the run starts.
    run = request.session.get("items_run", 0) + 1
    request.session["items_run"] = run
    return JsonResponse({"run": run})


@require_POST
def items_add(request: HttpRequest) -> JsonResponse:
    try:
        n = int(request.POST["n"])
    except (KeyError, ValueError):
        return JsonResponse({"error": "n must be an integer"}, status=400)
    if not 1 <= n <= MAX_ITEMS:
        return JsonResponse({"error": f"n must be 1..{MAX_ITEMS}"}, status=400)
    run = request.session.get("items_run", 0)  # loads the session now
    loaded_at = time.time()
    # Hold the loaded session a little, so the run's requests overlap: all of
    # them load the same version and then save concurrently.
    time.sleep(random.uniform(0.05, 0.15))
    request.session[f"{ITEM_PREFIX}{n}"] = {
        "run": run,
        "server": _server_name(),
        "pid": os.getpid(),
    }
    return JsonResponse(
        {"n": n, "server": _server_name(), "pid": os.getpid(), "loaded_at": loaded_at}
    )


@require_GET
def items_state(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "run": request.session.get("items_run", 0),
            "items": _items(request.session),
            "server": _server_name(),
        }
    )


# Session inspector -------------------------------------------------------------------


def session_info(request: HttpRequest) -> HttpResponse:
    # Reading only: this page never saves the session, so its TTL keeps counting down.
    session = request.session
    rows = []
    for key, value in sorted(session.items()):
        if key == users.MARKER:
            rows.append({"key": key, "kept_by": "this engine: the per-user index's activity stamp"})
        elif key.startswith("_"):
            rows.append({"key": key, "kept_by": "Django"})
        else:
            rows.append({"key": key, "value": json.dumps(value, ensure_ascii=False)})
    session_key = session.session_key
    ttl_ms = redis_key = None
    if session_key is not None:
        redis_key = codec.redis_key(conf.get_config().prefix, session_key)
        ttl_ms = connection.get_client().pttl(redis_key)
    context = {
        "rows": rows,
        "redis_key": redis_key,
        "ttl_seconds": None if ttl_ms is None or ttl_ms < 0 else ttl_ms // 1000,
        "ttl_text": _duration(ttl_ms),
    }
    return render(request, "testproject/session.html", context)


def _duration(ttl_ms: int | None) -> str:
    if ttl_ms is None or ttl_ms == -2:
        return "no session stored"
    if ttl_ms == -1:
        return "no expiry"
    seconds = ttl_ms // 1000
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{days} day{'s' if days != 1 else ''}, {clock}" if days else clock
