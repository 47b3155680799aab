"""``manage.py sessions_report``: how many sessions, how big, how long they live."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_redis_sessions import conf, connection, inventory
from django_redis_sessions.checks import ENGINE
from django_redis_sessions.driver import CLIENT_ERRORS

BAR_WIDTH = 30
# Building a Cluster client connects at once, so it may fail before collect() runs.
ERRORS: tuple[type[Exception], ...] = (inventory.ReportError, *CLIENT_ERRORS)


class Command(BaseCommand):
    help = (
        "Report what the Redis session store holds: sessions, authenticated ones, memory, "
        "size and remaining-lifetime percentiles, the largest sessions (by digest) and, on "
        "a Cluster, each node. Read-only; walks the keys with SCAN in batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument(
            "--batch", type=positive_int, default=1000, help="Keys per SCAN and pipeline."
        )
        parser.add_argument(
            "--max-seconds",
            type=positive_float,
            default=60.0,
            help="Stop after this long and report what was seen (marked incomplete).",
        )
        parser.add_argument(
            "--memory-samples",
            type=non_negative_int,
            default=10_000,
            help="Sessions measured with MEMORY USAGE; beyond, the total is extrapolated "
            "(0: skip memory).",
        )
        parser.add_argument(
            "--top", type=non_negative_int, default=10, help="How many of the largest to list."
        )
        parser.add_argument(
            "--progress",
            action="store_true",
            default=None,
            help="Show a progress bar on stderr (the default when it is a terminal).",
        )
        parser.add_argument("--no-progress", action="store_false", dest="progress")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.SESSION_ENGINE != ENGINE:
            raise CommandError(f"SESSION_ENGINE is {settings.SESSION_ENGINE!r}, not {ENGINE!r}.")
        config = conf.get_config()
        show = options["progress"]
        if show is None:
            show = self.stderr.isatty()
        try:
            report = inventory.collect(
                connection.get_client(),
                config.prefix,
                topology=config.topology,
                batch=options["batch"],
                max_seconds=options["max_seconds"],
                memory_samples=options["memory_samples"],
                top=options["top"],
                progress=self._progress if show else None,
            )
        except ERRORS as exc:
            raise CommandError(f"Cannot read the session store: {exc}") from exc
        finally:
            if show:
                self.stderr.write("")
        data = report.to_dict()
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.stdout.write("\n".join(render(data)))

    def _progress(self, scanned: int, total: int, node: int, nodes: int) -> None:
        done = BAR_WIDTH * scanned // max(total, 1)
        bar = "#" * done + "-" * (BAR_WIDTH - done)
        where = f", node {node}/{nodes}" if nodes > 1 else ""
        self.stderr.write(f"\r[{bar}] {scanned:,} of ~{total:,} keys{where}", ending="")
        self.stderr.flush()


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def _stat(summary: dict[str, float] | None, unit: str, scale: float = 1) -> str:
    if not summary:
        return "n/a"
    return ", ".join(
        f"{name} {value / scale:,.0f}{unit}" for name, value in summary.items() if name != "total"
    )


def render(data: dict[str, Any]) -> list[str]:
    memory = data["memory"]
    if memory["bytes"] is None:
        memory_text = f"not measured ({memory['error']})" if memory["error"] else "not measured"
    else:
        how = (
            f"estimated from {memory['sampled_sessions']:,} sessions"
            if memory["estimated"]
            else "measured on every session"
        )
        memory_text = f"{memory['bytes']:,} bytes (MEMORY USAGE, {how})"
    lines = [
        f"Sessions under {data['prefix']!r} ({data['topology']})"
        + ("" if data["complete"] else " -- INCOMPLETE: stopped at --max-seconds"),
        f"  sessions:       {data['sessions']:,}",
        f"  authenticated:  {data['authenticated']:,}",
        f"  unreadable:     {data['unreadable']:,}",
        f"  without expiry: {data['no_expiry']:,}",
        f"  other keys:     {data['other_keys']:,}",
        "  formats:        "
        + (", ".join(f"{k} {v:,}" for k, v in data["formats"].items()) or "n/a"),
        f"  memory:         {memory_text}",
        f"  stored bytes:   {data['stored_bytes']['total']:,} in all; "
        + _stat(data["stored_bytes"], " B"),
        f"  time to live:   {_stat(data['ttl_seconds'], ' s')}",
        f"  scanned in:     {data['elapsed_seconds']:.2f} s",
    ]
    if data["largest"]:
        lines += ["", "Largest sessions (by digest):"]
        lines += [
            f"  {row['digest']}  {row['stored_bytes']:>10,} B  "
            + (f"ttl {row['ttl_seconds']:,.0f} s" if row["ttl_seconds"] is not None else "no ttl")
            + (f"  {row['node']}" if len(data["nodes"]) > 1 else "")
            for row in data["largest"]
        ]
    if len(data["nodes"]) > 1:
        lines += ["", "Per node:"]
        for node in data["nodes"]:
            mem = f"{node['memory_bytes']:,} B" if node["memory_bytes"] is not None else "n/a"
            lines.append(
                f"  {node['node']}: {node['sessions']:,} sessions, "
                f"{node['authenticated']:,} authenticated, memory {mem}"
            )
    return lines
