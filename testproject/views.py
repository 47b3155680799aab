from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def counter(request: HttpRequest) -> HttpResponse:
    visits = request.session.get("visits", 0) + 1
    request.session["visits"] = visits
    return render(
        request, "testproject/counter.html", {"visits": visits, "server": settings.SERVER_NAME}
    )
