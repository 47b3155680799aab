"""The counter pages the middleware and HTTP rows request.

The same work as the demo's first counter page (load the session, add one to
``visits``, save), without the demo's template, auth and messages, so that the
figures show the session engine rather than the page around it.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

PAGE = "<!doctype html><title>Visit counter</title><p>You have visited this page {} times.</p>"


def counter(request: HttpRequest) -> HttpResponse:
    visits = request.session.get("visits", 0) + 1
    request.session["visits"] = visits
    return HttpResponse(PAGE.format(visits))


async def acounter(request: HttpRequest) -> HttpResponse:
    visits = await request.session.aget("visits", 0) + 1
    await request.session.aset("visits", visits)
    return HttpResponse(PAGE.format(visits))


def ping(request: HttpRequest) -> HttpResponse:
    # Never touches the session: the harness polls it until a server is up.
    return HttpResponse("ok")


urlpatterns = [
    path("", counter),
    path("async", acounter),
    path("ping", ping),
]
