from __future__ import annotations

from django.urls import include, path

from tests import views

urlpatterns = [
    path("counter/", views.counter),
    path("set/<str:key>/<str:value>/", views.set_value),
    path("append/<str:key>/<str:value>/", views.append_value),
    path("get/", views.get_all),
    path("login/", views.login_view),
    path("logout/", views.logout_view),
    path("whoami/", views.whoami),
    path("slow-set/<str:key>/<str:value>/", views.slow_set),
    path("error/", views.server_error),
    path("boom/", views.boom),
    path("plain/", views.plain),
    path("concurrent-logout/", views.concurrent_logout),
    path("aconcurrent-logout/", views.aconcurrent_logout),
    path("messages/", views.messages_view),
    path("csrf-token/", views.csrf_token_view),
    path("acounter/", views.acounter),
    path("aset/<str:key>/<str:value>/", views.aset_value),
    path("aget/", views.aget_all),
    path("io-report/", views.io_report),
    path("alogin/", views.alogin_view),
    path("alogout/", views.alogout_view),
    path("awhoami/", views.awhoami),
    path("end-own-sessions/", views.end_own_sessions),
    path("aend-own-sessions/", views.aend_own_sessions),
    path("change-password/", views.change_password),
    path("account/sessions/", include("django_redis_sessions.urls")),
]
