from __future__ import annotations

from django.urls import path

from testproject import views

urlpatterns = [
    path("", views.counter, name="counter"),
]
