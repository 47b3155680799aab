"""Admin actions on users: see their sessions, end them all.

Loaded by the admin's autodiscovery. When the user model is registered on the
default admin site before this module is imported (``django_redis_sessions``
listed after ``django.contrib.auth`` in INSTALLED_APPS), its ModelAdmin gets both
actions; a custom ModelAdmin can list them itself:
``actions = [show_sessions, end_all_sessions]``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from django_redis_sessions import users

#: How many users one "show sessions" page covers.
MAX_USERS_SHOWN = 50


@admin.action(description="Show their sessions", permissions=["view"])
def show_sessions(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]
) -> TemplateResponse:
    rows = [(user, users.get_sessions(user)) for user in queryset[:MAX_USERS_SHOWN]]
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Sessions",
        "opts": modeladmin.model._meta,
        "rows": rows,
    }
    return TemplateResponse(request, "admin/django_redis_sessions/user_sessions.html", context)


@admin.action(description="End all their sessions", permissions=["change"])
def end_all_sessions(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]
) -> None:
    ended = sum(users.end_sessions(user) for user in queryset)
    modeladmin.message_user(
        request, f"Ended {ended} session(s) of {queryset.count()} user(s).", messages.SUCCESS
    )


def add_user_actions(site: admin.AdminSite = admin.site) -> None:
    """Give the user model's ModelAdmin on ``site`` both actions (idempotent)."""
    model_admin = site._registry.get(get_user_model())
    if model_admin is None:
        return
    actions = list(model_admin.actions or ())
    for action in (show_sessions, end_all_sessions):
        if action not in actions:
            actions.append(action)
    model_admin.actions = actions


add_user_actions()
