"""Views the middleware tests drive through the real request cycle."""

from __future__ import annotations

import threading

from django.contrib.auth import login, logout
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse

# Tests set this to pause a request between its load and its save.
pause = threading.Event()
paused = threading.Event()


def counter(request: HttpRequest) -> HttpResponse:
    visits = request.session.get("visits", 0) + 1
    request.session["visits"] = visits
    return HttpResponse(str(visits))


def set_value(request: HttpRequest, key: str, value: str) -> HttpResponse:
    request.session[key] = value
    return HttpResponse("ok")


def append_value(request: HttpRequest, key: str, value: str) -> HttpResponse:
    request.session.setdefault(key, []).append(value)
    request.session.modified = True
    return HttpResponse("ok")


def get_all(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dict(request.session.items()))


def slow_set(request: HttpRequest, key: str, value: str) -> HttpResponse:
    request.session[key] = value
    paused.set()
    pause.wait(10)
    return HttpResponse("ok")


def login_view(request: HttpRequest) -> HttpResponse:
    user = User.objects.get(username=request.GET["username"])
    login(request, user)
    return HttpResponse("logged in")


def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return HttpResponse("logged out")


def whoami(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.user.username if request.user.is_authenticated else "anonymous")


def concurrent_logout(request: HttpRequest) -> HttpResponse:
    """Another request logs this session out while this one is still running."""
    from django_redis_sessions.session import SessionStore

    request.session["cart"] = ["book"]
    SessionStore().delete(request.session.session_key)
    return HttpResponse("ok")


async def aconcurrent_logout(request: HttpRequest) -> HttpResponse:
    from django_redis_sessions.session import SessionStore

    await request.session.aset("cart", ["book"])
    await SessionStore().adelete(request.session.session_key)
    return HttpResponse("ok")


def messages_view(request: HttpRequest) -> HttpResponse:
    from django.contrib import messages

    if request.method == "POST":
        messages.info(request, "saved!")
        return HttpResponse("posted")
    return HttpResponse(" ".join(str(m) for m in messages.get_messages(request)))


def csrf_token_view(request: HttpRequest) -> HttpResponse:
    from django.middleware.csrf import get_token

    return HttpResponse(get_token(request))


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("plain")


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


def server_error(request: HttpRequest) -> HttpResponse:
    request.session["error"] = "set"
    return HttpResponse("boom", status=500)


def io_report(request: HttpRequest) -> JsonResponse:
    """How this process has talked to Redis so far (for the ASGI test)."""
    from django_redis_sessions import connection

    return JsonResponse(
        {
            "sync_client_created": connection._client is not None,
            "async_clients": len(connection._async_clients),
        }
    )


async def aset_value(request: HttpRequest, key: str, value: str) -> HttpResponse:
    await request.session.aset(key, value)
    return HttpResponse("ok")


async def aget_all(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dict(await request.session.aitems()))


async def acounter(request: HttpRequest) -> HttpResponse:
    visits = await request.session.aget("visits", 0) + 1
    await request.session.aset("visits", visits)
    return HttpResponse(str(visits))


async def alogin_view(request: HttpRequest) -> HttpResponse:
    from django.contrib.auth import alogin  # Django 5.0+

    user = await User.objects.aget(username=request.GET["username"])
    await alogin(request, user)
    return HttpResponse("logged in")


async def alogout_view(request: HttpRequest) -> HttpResponse:
    from django.contrib.auth import alogout  # Django 5.0+

    await alogout(request)
    return HttpResponse("logged out")


async def awhoami(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    return HttpResponse(user.username if user.is_authenticated else "anonymous")


def end_own_sessions(request: HttpRequest) -> HttpResponse:
    """Every session of the user is ended while this request of one of them is in flight."""
    from django_redis_sessions import users

    request.session["cart"] = ["book"]
    users.end_sessions(request.user)
    return HttpResponse("ok")


async def aend_own_sessions(request: HttpRequest) -> HttpResponse:
    from django_redis_sessions import users

    await request.session.aset("cart", ["book"])
    await users.aend_sessions(await request.auser())
    return HttpResponse("ok")


def change_password(request: HttpRequest) -> HttpResponse:
    """The documented one-liner: a password change signs the user out everywhere else."""
    from django.contrib.auth import update_session_auth_hash

    from django_redis_sessions import users

    user = request.user
    assert isinstance(user, User)
    user.set_password(request.GET["password"])
    user.save()
    update_session_auth_hash(request, user)
    ended = users.end_sessions(user, keep=request.session)
    return HttpResponse(str(ended))
