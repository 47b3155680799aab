"""A drop-in replacement for Django's ``SessionMiddleware``, sync and async.

Under WSGI it behaves as Django's does (same cookies, same SessionInterrupted,
same rules for empty sessions and 5xx responses). Under ASGI it saves with
``await asave()`` on the event loop instead of hopping to a thread. Either way,
an unreachable Redis becomes a 503 with ``Retry-After`` instead of a 500, and
never costs the user their cookie.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import patch_vary_headers
from django.utils.http import http_date

from django_redis_sessions import conf, timeouts, users
from django_redis_sessions.exceptions import SessionUnavailable

logger = logging.getLogger("django_redis_sessions")

GetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's class, so that whatever looks for it finds it (the admin's E410
    check tests for a subclass); every method that does I/O is our own."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        # What Django's __init__ does (engine, async detection), typed for both modes.
        self.get_response = get_response
        self.SessionStore: type[SessionBase] = import_module(settings.SESSION_ENGINE).SessionStore
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        self.process_request(request)
        response = self.get_response(request)
        assert isinstance(response, HttpResponseBase)
        return self.process_response(request, response)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)
        response = await self.get_response(request)  # type: ignore[misc]
        return await self.aprocess_response(request, response)

    def process_request(self, request: HttpRequest) -> None:
        # No I/O here: the session loads when first used.
        request.session = self.SessionStore(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
        users.attach(request)  # for the IP and user agent of the user's session index

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponseBase | None:
        if isinstance(exception, SessionUnavailable):
            return unavailable_response()
        return None

    # django-stubs say HttpResponse; a streaming response passes through too.
    def process_response(  # type: ignore[override]
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        plan = _plan(request, response)
        if isinstance(plan, HttpResponseBase):
            return plan
        session, action = plan
        if action is SAVE:
            try:
                expiry = _session_cookie_expiry(session)
                session.save()
            except SessionUnavailable:
                return unavailable_response()
            except UpdateError as exc:
                raise SessionInterrupted(INTERRUPTED) from exc
            _set_cookie(response, session.session_key, expiry)
        elif action is RENEW_COOKIE:
            _set_cookie(response, session.session_key, _session_cookie_expiry(session))
        return _finish(session, response, action)

    async def aprocess_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        plan = _plan(request, response)
        if isinstance(plan, HttpResponseBase):
            return plan
        session, action = plan
        if action is SAVE:
            try:
                expiry = await _acookie_expiry(session)
                await session.asave()
            except SessionUnavailable:
                return unavailable_response()
            except UpdateError as exc:
                raise SessionInterrupted(INTERRUPTED) from exc
            _set_cookie(response, session.session_key, expiry)
        elif action is RENEW_COOKIE:
            _set_cookie(response, session.session_key, await _acookie_expiry(session))
        return _finish(session, response, action)


INTERRUPTED = (
    "The request's session was deleted before the request completed. "
    "The user may have logged out in a concurrent request, for example."
)


def unavailable_response() -> HttpResponse:
    response = HttpResponse(
        "The session store is temporarily unavailable. Please try again shortly.\n",
        status=503,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(conf.get_config().retry_after)
    return response


def _outage_response(response: HttpResponseBase) -> HttpResponseBase:
    # Redis failed while the request used the session and the failure surfaced
    # as a server error: say what happened instead of a bare 500.
    if response.status_code >= 500:
        return unavailable_response()
    return response


KEEP, SAVE, DELETE_COOKIE = "keep", "save", "delete-cookie"
# The session's idle window slid without a save: the cookie's Max-Age slides too.
RENEW_COOKIE = "renew-cookie"


def _plan(
    request: HttpRequest, response: HttpResponseBase
) -> tuple[SessionBase, str] | HttpResponseBase:
    """The session and what to do with it, or the response to return as it stands."""
    session: SessionBase | None = getattr(request, "session", None)
    if session is None:
        return response
    if getattr(session, "unavailable", None) is not None and not getattr(
        session, "_read_only", False
    ):
        return _outage_response(response)
    return session, _decide(request, session, response)


def _decide(request: HttpRequest, session: SessionBase, response: HttpResponseBase) -> str:
    """Django's rules: drop the cookie of an emptied session, else save when asked to."""
    empty = session.is_empty()
    if settings.SESSION_COOKIE_NAME in request.COOKIES and empty:
        return DELETE_COOKIE
    wants = session.modified or settings.SESSION_SAVE_EVERY_REQUEST
    # Nothing is saved for a 5xx response.
    if wants and not empty and response.status_code < 500:
        return SAVE
    if timeouts.renews_cookie(session) and response.status_code < 500:
        return RENEW_COOKIE
    return KEEP


def _expires(max_age: int | float) -> tuple[int | float | None, str | None]:
    return max_age, http_date(time.time() + max_age)


def _session_cookie_expiry(session: SessionBase) -> tuple[int | float | None, str | None]:
    if session.get_expire_at_browser_close():
        return None, None
    return _expires(timeouts.cookie_age(session, session.get_expiry_age()))


async def _acookie_expiry(session: SessionBase) -> tuple[int | float | None, str | None]:
    if await session.aget_expire_at_browser_close():
        return None, None
    return _expires(timeouts.cookie_age(session, await session.aget_expiry_age()))


def _set_cookie(
    response: HttpResponseBase,
    session_key: str | None,
    expiry: tuple[int | float | None, str | None],
) -> None:
    max_age, expires = expiry
    assert session_key is not None
    response.set_cookie(
        settings.SESSION_COOKIE_NAME,
        session_key,
        max_age=None if max_age is None else int(max_age),
        expires=expires,
        domain=settings.SESSION_COOKIE_DOMAIN,
        path=settings.SESSION_COOKIE_PATH,
        secure=bool(settings.SESSION_COOKIE_SECURE),
        httponly=bool(settings.SESSION_COOKIE_HTTPONLY),
        samesite=settings.SESSION_COOKIE_SAMESITE,
    )


def _finish(session: SessionBase, response: HttpResponseBase, action: str) -> HttpResponseBase:
    if action is DELETE_COOKIE:
        response.delete_cookie(
            settings.SESSION_COOKIE_NAME,
            path=settings.SESSION_COOKIE_PATH,
            domain=settings.SESSION_COOKIE_DOMAIN,
            samesite=settings.SESSION_COOKIE_SAMESITE,
        )
    if action is not KEEP or session.accessed:
        patch_vary_headers(response, ("Cookie",))
    return response
