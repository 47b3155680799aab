"""Django's system checks see our middleware: the admin starts, deploy checks still warn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core import checks
from django.core.management import call_command
from django.test import override_settings

from django_redis_sessions.checks import check_session_cookie_httponly
from tests.twins import DJANGOS, OURS

ADMIN_SITE = {
    "INSTALLED_APPS": ["django.contrib.admin", *settings.INSTALLED_APPS],
    "TEMPLATES": [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ],
}
# Everything `check --deploy` asks for, so that only session findings could remain.
SECURE = {
    "SESSION_COOKIE_SECURE": True,
    "SESSION_COOKIE_HTTPONLY": True,
    "CSRF_COOKIE_SECURE": True,
    "SECURE_SSL_REDIRECT": True,
    "SECURE_HSTS_SECONDS": 3600,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_HSTS_PRELOAD": True,
    "SECRET_KEY": "a-long-and-random-enough-secret-key-for-the-deploy-checks-0123456789",
    "DEBUG": False,
    "MIDDLEWARE": [
        "django.middleware.security.SecurityMiddleware",
        *settings.MIDDLEWARE,
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ],
}


WITHOUT_SESSIONS_APP = [
    "django.contrib.admin",
    *(app for app in settings.INSTALLED_APPS if app != "django.contrib.sessions"),
]


@pytest.fixture
def admin_site() -> Iterator[None]:
    with override_settings(**ADMIN_SITE):
        yield


def session_findings(deploy: bool) -> list[checks.CheckMessage]:
    found = checks.run_checks(include_deployment_checks=deploy)
    # The session cookie's checks (Django's security.W010-W015, ours W011/W014)
    # and the admin's: not the deploy checks about Redis itself (W1xx), which
    # speak on Sentinel and Cluster (tests/test_deploy_checks.py).
    cookie = {f"security.W01{n}" for n in range(6)} | {
        "django_redis_sessions.W011",
        "django_redis_sessions.W014",
        "admin.E410",
    }
    return [m for m in found if m.id in cookie]


def test_admin_accepts_our_middleware(admin_site: None) -> None:
    assert OURS in settings.MIDDLEWARE
    assert DJANGOS not in settings.MIDDLEWARE
    found = checks.run_checks()
    assert [m.id for m in found if m.is_serious()] == []
    call_command("check")  # raises SystemCheckError on any error


def test_admin_without_any_session_middleware_still_fails(admin_site: None) -> None:
    # The admin's check is live in this setup: it is our class that satisfies it.
    with override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if m != OURS]):
        assert "admin.E410" in [m.id for m in checks.run_checks()]


def test_deploy_checks_quiet_with_secure_cookies(admin_site: None) -> None:
    # W102 (Sentinel or Cluster without wait_replicas) is about the suite's
    # topology, not about the cookie: tests/test_deploy_checks.py covers it.
    with override_settings(**SECURE, SILENCED_SYSTEM_CHECKS=["django_redis_sessions.W102"]):
        assert session_findings(deploy=True) == []
        call_command("check", deploy=True, fail_level="WARNING")


@pytest.mark.parametrize(
    ("setting", "ours", "djangos"),
    [
        ("SESSION_COOKIE_SECURE", "django_redis_sessions.W011", "security.W010"),
        ("SESSION_COOKIE_HTTPONLY", "django_redis_sessions.W014", "security.W013"),
    ],
)
def test_deploy_checks_warn_about_insecure_cookies(
    admin_site: None, setting: str, ours: str, djangos: str
) -> None:
    # With django.contrib.sessions installed (as README's settings have it),
    # Django's own warning speaks about the cookie, and ours would repeat it.
    with override_settings(**{**SECURE, setting: False}):
        found = session_findings(deploy=True)
        assert [str(m.id) for m in found] == [djangos]
        # Not a deploy check: plain `check` stays quiet.
        assert session_findings(deploy=False) == []
    # Without the app Django sees no sessions at all: ours is the only warning.
    with override_settings(**{**SECURE, setting: False, "INSTALLED_APPS": WITHOUT_SESSIONS_APP}):
        found = session_findings(deploy=True)
        assert [str(m.id) for m in found] == [ours]
        assert found[0].level == checks.WARNING
        assert OURS in found[0].msg and setting in found[0].msg
        assert session_findings(deploy=False) == []


def test_deploy_checks_name_a_subclass_of_ours() -> None:
    subclass = "tests.test_admin_checks.SubclassedMiddleware"
    with override_settings(
        MIDDLEWARE=[subclass], SESSION_COOKIE_HTTPONLY=False, INSTALLED_APPS=WITHOUT_SESSIONS_APP
    ):
        [warning] = check_session_cookie_httponly()
    assert subclass in warning.msg


@pytest.mark.parametrize(
    "middleware",
    [
        # Django's own checks speak about the cookie then (security.W012/W015).
        [OURS, DJANGOS],
        # A path that does not import is Django's to report.
        ["no.such.Middleware"],
        # Django's sessions app is installed: its W013 speaks (see above).
        [OURS],
        # Another session middleware is not ours.
        [DJANGOS],
        ["django.middleware.common.CommonMiddleware"],
    ],
)
def test_deploy_checks_stay_out_of_others_business(middleware: list[str]) -> None:
    with override_settings(MIDDLEWARE=middleware, SESSION_COOKIE_HTTPONLY=False):
        assert check_session_cookie_httponly() == []


from django_redis_sessions.middleware import SessionMiddleware  # noqa: E402


class SubclassedMiddleware(SessionMiddleware):
    pass
