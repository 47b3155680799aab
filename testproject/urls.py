from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import include, path

from testproject import views

urlpatterns = [
    path("", views.counter, name="counter"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="testproject/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("items/", views.items, name="items"),
    path("items/clear/", views.items_clear, name="items-clear"),
    path("items/add/", views.items_add, name="items-add"),
    path("items/state/", views.items_state, name="items-state"),
    path("session/", views.session_info, name="session"),
    path("account/sessions/", include("django_redis_sessions.urls")),
    path("healthz", views.healthz, name="healthz"),
]
