"""``path("account/sessions/", include("django_redis_sessions.urls"))``: a user's own sessions."""

from __future__ import annotations

from django.urls import path

from django_redis_sessions import views

app_name = "user_sessions"

urlpatterns = [
    path("", views.session_list, name="list"),
    path("others/end/", views.end_other_sessions, name="end-others"),
    path("<str:session_id>/end/", views.end_session, name="end"),
]
