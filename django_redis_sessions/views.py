"""The signed-in user's own sessions: list them, sign out one, sign out all others.

Every change is a POST with Django's CSRF protection, and only ever touches a
session listed in the requesting user's own index.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_POST

from django_redis_sessions import codec, users

TEMPLATE = "django_redis_sessions/session_list.html"


@require_GET
@login_required
def session_list(request: HttpRequest) -> HttpResponse:
    sessions = users.get_sessions(request.user, current=request.session)
    return render(request, TEMPLATE, {"sessions": sessions})


@require_POST
@csrf_protect
@login_required
def end_session(request: HttpRequest, session_id: str) -> HttpResponse:
    key = request.session.session_key
    if key is not None and session_id == codec.digest(key):
        # This device: an ordinary logout, so the response drops the cookie.
        logout(request)
        return HttpResponseRedirect(resolve_url(settings.LOGOUT_REDIRECT_URL or "/"))
    if not users.end_session(request.user, session_id):
        raise Http404("No such session of yours.")
    return HttpResponseRedirect(reverse("user_sessions:list"))


@require_POST
@csrf_protect
@login_required
def end_other_sessions(request: HttpRequest) -> HttpResponse:
    users.end_sessions(request.user, keep=request.session)
    return HttpResponseRedirect(reverse("user_sessions:list"))
