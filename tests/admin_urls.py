"""The test site with the admin, for tests/test_user_admin.py."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from tests.urls import urlpatterns as site_urls

urlpatterns = [*site_urls, path("admin/", admin.site.urls)]
