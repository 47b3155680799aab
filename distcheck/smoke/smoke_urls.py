from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path


def counter(request: HttpRequest) -> HttpResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(str(request.session["visits"]))


urlpatterns = [path("", counter)]
