from __future__ import annotations

import os
import zlib
from typing import Any

from django.conf import settings
from django.http import HttpRequest


def demo(request: HttpRequest) -> dict[str, Any]:
    """The answering server's name (with a colour of its own) and links to every server."""
    name = str(getattr(settings, "SERVER_NAME", ""))
    servers = []
    for entry in getattr(settings, "DEMO_SERVERS", []):
        label, _, url = entry.partition("=")
        servers.append({"name": label, "url": url, "current": label == name})
    return {
        "server_name": name,
        "server_pid": os.getpid(),
        # A stable hue per name, so A and B look different at a glance.
        "server_hue": zlib.crc32(name.encode()) % 360,
        "servers": servers,
    }
