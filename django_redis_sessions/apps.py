from __future__ import annotations

from django.apps import AppConfig


class RedisSessionsConfig(AppConfig):
    name = "django_redis_sessions"
    verbose_name = "Redis sessions"

    def ready(self) -> None:
        from django.apps import apps

        from django_redis_sessions import checks, connection, migration, plan, users

        # A bad SESSION_REDIS stops every entry point (manage.py, gunicorn,
        # uvicorn) at startup with ImproperlyConfigured naming the key.
        config = plan.get_plan().config
        connection.check_options(config)
        migration.check(config)
        checks.register()
        if apps.is_installed("django.contrib.auth"):
            users.connect_signals()
