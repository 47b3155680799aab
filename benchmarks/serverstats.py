"""What the server spent on an operation, from ``INFO commandstats`` and ``MONITOR``."""

from __future__ import annotations

from typing import Any

# Commands about the run itself or a new connection's handshake, not the operation.
OWN_COMMANDS = {"info", "config", "monitor", "echo", "hello", "client", "select", "auth"}


def command_us(stats: dict[str, Any], top_level: dict[str, float]) -> float:
    """µs the server spent in the commands the client sent (``INFO commandstats``).

    A command a script runs has its own ``cmdstat_*`` line, and its time is in
    the script's (EVALSHA's) too: each line counts only the share of its calls
    the client sent itself (``top_level``, seen with MONITOR). A command never
    seen there counts whole.
    """
    return sum(by_command(stats, top_level).values())


def by_command(stats: dict[str, Any], top_level: dict[str, float]) -> dict[str, float]:
    """``command_us`` per command name (``set``, ``evalsha`` ...), the run's own left out."""
    found: dict[str, float] = {}
    for key, row in stats.items():
        name = key.removeprefix("cmdstat_").split("|")[0]
        if name not in OWN_COMMANDS:
            found[name] = found.get(name, 0.0) + float(row["usec"]) * top_level.get(name, 1.0)
    return found


def top_level_shares(lines: list[dict[str, Any]]) -> dict[str, float]:
    """Per command, the share of its calls sent by a client rather than by a script."""
    sent: dict[str, int] = {}
    scripted: dict[str, int] = {}
    for line in lines:
        name = line["command"].split(" ", 1)[0].lower()
        if name in OWN_COMMANDS:
            continue
        into = scripted if line.get("client_type") == "lua" else sent
        into[name] = into.get(name, 0) + 1
    return {
        name: sent.get(name, 0) / (sent.get(name, 0) + scripted.get(name, 0))
        for name in {*sent, *scripted}
    }
