"""Turn a run's raw figures (``results/latest.json``) into ``RESULTS.md``.

Every cell is the median over the interleaved rounds (each round's figure being
the median operation of that round), and the ratio beside it is that median over
the floor's, measured in the same rounds.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.engines import BY_NAME, ENGINES

OP_TITLES = {
    "load": "load",
    "cycle": "read-modify-save",
    "create": "create",
    "exists": "exists",
    "delete": "delete",
    "cycle_key": "cycle_key",
    "middleware": "middleware request",
    "aget": "aget",
    "acycle": "async read-modify-save",
    "amiddleware": "async middleware request",
}
OURS = tuple(e.name for e in ENGINES if e.settings_name.startswith("ours"))
FLOORS = tuple(e.name for e in ENGINES if e.settings_name == "floor")
PEERS = [e.name for e in ENGINES if e.name not in (*FLOORS, *OURS)]
# Each feature's row, and the row without it (the index is on by default).
FEATURES = {
    "per-user index": ("ours", "ours_noindex"),
    "encryption": ("ours_crypt", "ours"),
    "idle + absolute timeouts": ("ours_timeouts", "ours"),
    "compression (≥ 256 B)": ("ours_zlib", "ours"),
    "Valkey 8.1 instead of Redis 7": ("ours_valkey", "ours"),
}


def floor_of(name: str) -> str:
    """The floor on the engine's own server: ratios divide by it."""
    engine = BY_NAME.get(name)
    return engine.floor if engine else "floor"


def _values(xs: list[float | None]) -> list[float]:
    return [x for x in xs if x is not None]


def median(xs: list[float | None]) -> float | None:
    values = _values(xs)
    return statistics.median(values) if values else None


def to_floor(xs: list[float | None], floor: list[float | None]) -> float | None:
    """The ratio of the medians, both taken over the same interleaved rounds."""
    mine, theirs = median(xs), median(floor)
    return mine / theirs if mine is not None and theirs else None


def spread(xs: list[float | None]) -> float | None:
    """Interquartile range over the median: how much a cell moved between rounds."""
    values = _values(xs)
    if len(values) < 4:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4)
    middle = statistics.median(values)
    return (q3 - q1) / middle if middle else None


def label(name: str) -> str:
    text = BY_NAME[name].label
    return f"**{text}**" if name in OURS else text


def ops_table(timings: dict[str, dict[str, list[float | None]]], ops: list[str]) -> list[str]:
    lines = [
        "| engine | " + " | ".join(OP_TITLES[op] for op in ops) + " |",
        "|---|" + "---:|" * len(ops),
    ]
    for name, by_op in timings.items():
        floor = timings.get(floor_of(name), {})
        cells = []
        for op in ops:
            value = median(by_op.get(op, []))
            if value is None:
                cells.append("failed" if op in by_op else "n/a")
                continue
            cell = f"{value:,.{1 if value < 10 else 0}f} µs"
            if name not in FLOORS:
                ratio = to_floor(by_op[op], floor.get(op, []))
                cell += f" · {ratio:.2f}×" if ratio is not None else ""
            cells.append(cell)
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    return lines


def noise_lines(timings: dict[str, dict[str, list[float | None]]]) -> list[str]:
    spreads = [s for by_op in timings.values() for xs in by_op.values() if (s := spread(xs))]
    if not spreads:
        return []
    return [
        f"- Round-to-round spread of a cell (interquartile range / median): median "
        f"{statistics.median(spreads):.0%}, worst {max(spreads):.0%}."
    ]


def memory_table(memory: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| engine | bytes / session (`used_memory` Δ / N) | × floor | `MEMORY USAGE` | "
        "value bytes | key bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in memory.items():
        floor = memory.get(floor_of(name), {}).get("per_session")
        if "error" in row:
            lines.append(f"| {label(name)} | failed: {row['error']} | | | | |")
            continue
        ratio = f"{row['per_session'] / floor:.3f}×" if floor else ""
        lines.append(
            f"| {label(name)} | {row['per_session']:,.0f} | {ratio} | "
            f"{row['memory_usage']:,.0f} | {row['value_bytes']:,.0f} | {row['key_bytes']:.0f} |"
        )
    return lines


def _delta(with_it: list[float | None], without: list[float | None]) -> str:
    mine, theirs = median(with_it), median(without)
    if mine is None or not theirs:
        return "n/a"
    return f"{mine - theirs:+,.0f} µs ({mine / theirs:.2f}×)"


def feature_table(data: dict[str, Any]) -> list[str]:
    """What each feature adds to our engine's defaults (or saves: the index's row
    is what turning it on costs), from the same rounds."""
    sync, server = data.get("sync", {}), data.get("sync_server", {})
    memory = data.get("memory", {})
    lines = [
        "| feature | read-modify-save | middleware request | create (sign-in) | "
        "server µs per read-modify-save | bytes / session |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for title, (on, off) in FEATURES.items():
        if on not in sync or off not in sync:
            lines.append(f"| {title} | not measured in this run | | | | |")
            continue
        cells = [_delta(sync[on][op], sync[off][op]) for op in ("cycle", "middleware", "create")]
        mine, theirs = (
            median(server.get(on, {}).get("cycle", [])),
            median(server.get(off, {}).get("cycle", [])),
        )
        cells.append(f"{mine:.1f} vs {theirs:.1f}" if mine is not None and theirs else "n/a")
        size = [memory.get(name, {}).get("per_session") for name in (on, off)]
        cells.append(f"{size[0] - size[1]:+,.0f} B" if None not in size else "n/a")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def _http_cell(runs: list[dict[str, Any]], floor: list[dict[str, Any]]) -> list[str]:
    rps = [run["rps"] for run in runs]
    bad = sum(run["non2xx"] + run["socket_errors"] for run in runs)
    ratio = to_floor(rps, [run["rps"] for run in floor]) if floor is not runs else None
    cells = [
        f"{median(rps):,.0f}" + (f" ⚠ {bad} errors" if bad else ""),
        f"{ratio:.2f}×" if ratio is not None else "",
        f"{median([run['p50_us'] / 1000 for run in runs]):.1f} ms",
        f"{median([run['p99_us'] / 1000 for run in runs]):.1f} ms",
    ]
    return cells


def http_table(http: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    kinds = list(http)
    head = " | ".join(f"{kind} req/s | × floor | p50 | p99" for kind in kinds)
    lines = [f"| engine | {head} |", "|---|" + "---:|" * 4 * len(kinds)]
    for name in http[kinds[0]]:
        cells: list[str] = []
        for kind in kinds:
            cells += _http_cell(http[kind][name], http[kind].get("floor", []))
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    return lines


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def round_ratios(xs: list[float | None], floor: list[float | None]) -> list[float]:
    """Each round's figure over the floor's in the same round."""
    return [x / f for x, f in zip(xs, floor, strict=False) if x is not None and f]


def ratio_noise(xs: list[float | None], floor: list[float | None]) -> float | None:
    """The noise of a ratio's median: half the width of its 95 % band, relative,
    from the per-round ratios' spread (s ≈ IQR / 1.35; the median of n rounds has a
    standard error of 1.25 s / √n). Two runs' medians of the same cell should
    then differ by less than √2 times this (mostly)."""
    ratios = round_ratios(xs, floor)
    iqr = spread(list(ratios))
    return None if iqr is None else 1.96 * 1.2533 * (iqr / 1.349) / math.sqrt(len(ratios))


# Other jobs disturb stretches of several rounds at a time, so a run's rounds are not
# independent and the band above is too narrow: of two quick runs back to back on the
# shared machine, 6 to 26 % of ~150 time-ratio cells differed beyond it, 0 to 2 % beyond
# twice it (three pairs; benchmarks/README.md, "Noise"). The stated noise is twice it.
NOISE_STRETCH = 2.0


def stated_noise(xs: list[float | None], floor: list[float | None]) -> float | None:
    """The noise a ratio is quoted with: ``NOISE_STRETCH`` times ``ratio_noise``."""
    noise = ratio_noise(xs, floor)
    return None if noise is None else NOISE_STRETCH * noise


def ratio_noises(data: dict[str, Any]) -> dict[str, float]:
    """``stated_noise`` of every cell of every engine over its floor: "engine/op" -> noise."""
    found: dict[str, float] = {}
    for section in ("sync", "async"):
        timings = data.get(section, {})
        for name, by_op in timings.items():
            floor = timings.get(floor_of(name))
            if name in FLOORS or floor is None:
                continue
            for op, xs in by_op.items():
                noise = stated_noise(xs, floor.get(op, []))
                if noise is not None:
                    found[f"{name}/{op}"] = noise
    return found


def noise_section(data: dict[str, Any]) -> list[str]:
    noises = ratio_noises(data)
    if not noises:
        return ["Too few rounds to tell (4 or more are needed)."]
    ordered = sorted(noises.values())
    worst = max(noises, key=noises.__getitem__)
    ours = [noises[cell] for cell in noises if cell.split("/")[0] in OURS]
    return [
        "A ratio is an engine's median over the floor's, both over the same interleaved "
        "rounds. How far it could move in another run follows from how much the per-round "
        "ratios spread: half the width of the median's 95 % band (1.96 × 1.25 s / √rounds, "
        "s ≈ interquartile range / 1.35), times "
        f"{NOISE_STRETCH:g} because other jobs disturb stretches of several rounds at a "
        "time (measured with three pairs of quick runs back to back: 6 to 26 % of ~150 "
        "cells differed beyond the band alone, 0 to 2 % beyond twice it; server-time "
        "ratios within the band alone in 94 to 98 %, memory within 1 %; "
        'benchmarks/README.md, "Noise"). '
        f"This run's stated noise: median ±{statistics.median(ordered):.0%} "
        f"over every engine's cells, ±{statistics.median(ours) if ours else float('nan'):.0%} "
        f"over our rows', worst ±{noises[worst]:.0%} ({worst}). Two runs' ratios of a cell "
        "should differ by less than their ± combined.",
        *noise_lines(data.get("sync", {})),
    ]


# The server each target is checked on, and its two rows (the floor, our defaults).
TARGET_SERVERS = {"Redis 7": ("floor", "ours"), "Valkey 8.1": ("floor_valkey", "ours_valkey")}
# (title, section, operation, limit): our defaults over the floor of the same server.
OP_TARGETS = [
    ("sign-in (a new user's session) ≤ 1.6 × the floor's create", "sync", "create", 1.6),
    ("read-modify-save ≤ 1.25 × the floor", "sync", "cycle", 1.25),
    ("middleware request ≤ 1.15 × the floor's", "sync", "middleware", 1.15),
    ("async read-modify-save ≤ 1.25 × the redis.asyncio floor", "async", "acycle", 1.25),
    ("load ≤ 1.1 × the floor", "sync", "load", 1.1),
]
SAVE_LIMIT = 2.0  # Redis CPU per save, over a plain SET's
MEMORY_LIMIT = 1.10


def save_server_us(data: dict[str, Any], name: str) -> tuple[float | None, list[str]]:
    """The server time of one save (µs, ``INFO commandstats``) and its commands: those
    the read-modify-save sends that a load does not (the floor: SET; ours: the
    check-and-set script, or a native SET ... IFEQ)."""
    commands = data.get("sync_server_commands", {}).get(name, {})
    read = {command for row in commands.get("load", []) if row for command in row}
    rounds = [row for row in commands.get("cycle", []) if row]
    per_round = [sum(us for command, us in row.items() if command not in read) for row in rounds]
    # A command only a script runs has its line at 0 µs (its time is in the script's).
    names = sorted({command for row in rounds for command, us in row.items() if us} - read)
    return median(list(per_round)), names


Cell = tuple[str, bool | None]


def _op_cell(
    data: dict[str, Any], section: str, op: str, floor: str, ours: str, limit: float
) -> Cell:
    timings = data.get(section, {})
    if ours not in timings or floor not in timings:
        return "not measured", None
    ratio = to_floor(timings[ours][op], timings[floor][op])
    if ratio is None:
        return "failed", None
    noise = stated_noise(timings[ours][op], timings[floor][op])
    text = f"{ratio:.2f}×" + (f" ±{noise:.0%}" if noise is not None else "")
    return text, ratio <= limit


def _save_cell(data: dict[str, Any], floor: str, ours: str) -> Cell:
    mine, commands = save_server_us(data, ours)
    theirs, floor_commands = save_server_us(data, floor)
    if mine is None or not theirs:
        return "not measured", None
    ratio = mine / theirs
    text = (
        f"{mine:.1f} µs ({', '.join(c.upper() for c in commands)}) vs {theirs:.1f} µs "
        f"({', '.join(c.upper() for c in floor_commands)}): {ratio:.1f}×"
    )
    if {"evalsha", "eval"} & set(commands):
        # The server has no SET ... IFEQ: the goal is for servers that have it.
        return text + " (script: no native compare-and-set here)", None
    return text, ratio <= SAVE_LIMIT


def _memory_cell(data: dict[str, Any], floor: str, ours: str) -> Cell:
    memory = data.get("memory", {})
    mine, theirs = memory.get(ours, {}).get("per_session"), memory.get(floor, {}).get("per_session")
    if mine is None or not theirs:
        return "not measured", None
    ratio = mine / theirs
    return f"{mine:,.0f} B vs {theirs:,.0f} B: {ratio:.3f}×", ratio <= MEMORY_LIMIT


def target_cells(data: dict[str, Any]) -> list[tuple[str, list[Cell]]]:
    """Issue 20's targets, each measured on every server: (title, [(text, met)])."""
    rows: list[tuple[str, list[Cell]]] = [
        (
            f"Redis CPU per save ≤ {SAVE_LIMIT:g} × a plain SET where the server has "
            "`SET ... IFEQ` (the save's commands' server time, `INFO commandstats`)",
            [_save_cell(data, *pair) for pair in TARGET_SERVERS.values()],
        )
    ]
    rows += [
        (title, [_op_cell(data, section, op, *pair, limit) for pair in TARGET_SERVERS.values()])
        for title, section, op, limit in OP_TARGETS
    ]
    rows.insert(
        2,
        (
            f"memory per session ≤ {MEMORY_LIMIT:.2f} × the floor (index on, IP and user "
            "agent stored)",
            [_memory_cell(data, *pair) for pair in TARGET_SERVERS.values()],
        ),
    )
    return rows


def targets(data: dict[str, Any]) -> list[str]:
    servers = list(TARGET_SERVERS)
    lines = [
        "Our defaults (the per-user index on, one user per session) over the floor on the "
        'same server, medians over the rounds; ± is the ratio\'s noise (see "Noise" below). '
        "Each verdict compares the measured median with the target.",
        "",
        "| target | " + " | ".join(f"{server} | " for server in servers) + " |",
        "|---|" + "---|---|" * len(servers),
    ]
    for title, cells in target_cells(data):
        lines.append(
            f"| {title} | " + " | ".join(f"{text} | {_verdict(ok)}" for text, ok in cells) + " |"
        )
    return lines


def issue8_targets(data: dict[str, Any]) -> list[str]:
    """The earlier targets that issue 20's do not replace: HTTP and compressed memory."""
    rows: list[tuple[str, str, bool | None]] = []
    for kind, by_engine in data.get("http", {}).items():
        if "ours" not in by_engine or "floor" not in by_engine:
            continue
        rps = {name: median([run["rps"] for run in runs]) or 0 for name, runs in by_engine.items()}
        ratio = to_floor(
            [run["rps"] for run in by_engine["ours"]], [run["rps"] for run in by_engine["floor"]]
        )
        best_peer = max((rps[p] for p in PEERS if p in rps), default=0.0)
        ok = ratio is not None and ratio >= 0.95 and rps["ours"] > best_peer
        rows.append(
            (
                f"HTTP ({kind}): ≥ 0.95 × floor req/s and above every peer",
                f"{ratio:.2f}×, {rps['ours']:,.0f} req/s vs best peer {best_peer:,.0f}"
                if ratio is not None
                else "failed",
                ok,
            )
        )
    per = {
        name: row["per_session"]
        for name, row in data.get("memory", {}).items()
        if "per_session" in row
    }
    peer_min = min((per[p] for p in PEERS if p in per), default=None)
    if "ours_zlib" in per and peer_min is not None:
        rows.append(
            (
                "memory with compression below every peer",
                f"{per['ours_zlib']:,.0f} B vs best peer {peer_min:,.0f} B",
                per["ours_zlib"] < peer_min,
            )
        )
    if not rows:
        return ["Not measured in this run (needs the HTTP section or the peers)."]
    lines = ["| target | measured | |", "|---|---|---|"]
    lines += [f"| {title} | {text} | {_verdict(ok)} |" for title, text, ok in rows]
    return lines


def other_load(data: dict[str, Any]) -> list[str]:
    """Other jobs' share of the run's CPU(s) per round of the timed sections."""
    rounds = [
        row for section in ("sync", "async") for row in data.get(f"{section}_other_load", []) if row
    ]
    if not rounds:
        return []
    others = [row["others"] for row in rounds]
    rest = [row["rest"] for row in rounds if "rest" in row]
    steal = max(row["steal"] for row in rounds)
    pinned = data["notes"].get("pinned")
    where = f"CPU {', '.join(map(str, pinned))} (the run's)" if pinned else "the CPUs"
    return [
        f"- Other jobs' share of {where} during the timed rounds: median "
        f"{statistics.median(others):.0%}, worst round {max(others):.0%}"
        + (f"; hypervisor steal up to {steal:.0%}" if steal >= 0.005 else "")
        + (
            f"; the other CPUs were busy {statistics.median(rest):.0%} (median), "
            f"{max(rest):.0%} (worst round)"
            if rest
            else ""
        )
    ]


def machine(data: dict[str, Any]) -> list[str]:
    notes = data["notes"]
    versions = notes.get("versions", {})
    plan = notes["plan"]
    ours_mw = notes.get("middleware", {}).get("ours", "?")
    ver = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "hiredis parser")
    servers = ", ".join(notes.get("servers", {}).values()) or notes.get("redis_server", "?")
    pinned = ", ".join(str(cpu) for cpu in notes.get("pinned") or [])
    lines = [
        f"- Date: {notes['date']}; run took {notes.get('seconds', '?')} s"
        + (" (**--quick**: fewer, shorter rounds)" if notes.get("quick") else ""),
        f"- CPU: {notes['cpu']}, {notes['cores']} cores; {notes['platform']}",
        "- Load average (1/5/15 min) before: "
        + " / ".join(f"{x:.2f}" for x in notes["load_before"])
        + ", after: "
        + " / ".join(f"{x:.2f}" for x in notes.get("load_after", []))
        + " (a shared machine: other jobs ran too)",
        *other_load(data),
        f"- {ver}; hiredis parser in use: {versions.get('hiredis parser', '?')}",
        f"- {servers}, started by the benchmark on 127.0.0.1 (no persistence)"
        + (f", pinned with the workers to CPU {pinned}" if pinned else ", not pinned")
        + "; PostgreSQL: "
        + str(notes["postgres"]),
        f"- wrk: {notes.get('wrk', '?')}",
        f"- Our engine at revision {notes['revision']}; our rows use `{ours_mw}`, "
        "the others Django's `SessionMiddleware`",
        f"- {plan['rounds']} interleaved rounds; per round and cell up to {plan['n']} "
        f"operations or {plan['max_s']} s after {plan['warmup']} warm-up operations",
    ]
    return lines


# The manual's table of key rows (docs/benchmarks.rst) sits between these two
# comment lines; a full run rewrites it (``update_readme``), so its figures and
# the chart come from one run.
README_START = ".. benchmark-key-rows: start (written by benchmarks/report.py)"
README_END = ".. benchmark-key-rows: end"
KEY_ROWS = {
    "floor": "floor (redis-py + hiredis)",
    "ours": "**django_redis_sessions**",
    "ours_noindex": "**... user_index=False**",
    "ours_crypt": "**... encryption_keys**",
    "ours_timeouts": "**... idle + absolute timeouts**",
    "ours_zlib": "**... compress_min_bytes=256**",
    "floor_valkey": "floor on Valkey 8.1",
    "ours_valkey": "**django_redis_sessions, Valkey**",
    "redis_sessions_062": "django-redis-sessions 0.6.2",
    "djredis_pickle": "cache on django-redis, pickle",
    "django_cache": "cache on Django's RedisCache",
    "db_pg": "db, PostgreSQL",
}


def _key_cell(timings: dict[str, dict[str, list[float | None]]], name: str, op: str) -> str:
    value = median(timings.get(name, {}).get(op, []))
    if value is None:
        return "n/a"
    ratio = None if name in FLOORS else to_floor(timings[name][op], timings[floor_of(name)][op])
    return f"{value:,.0f} µs" + (f", {ratio:.2f} x" if ratio is not None else "")


def key_rows(data: dict[str, Any]) -> list[str]:
    """README's table: an RST simple table of the rows users compare."""
    memory = data.get("memory", {})
    rows = [["engine", "read-modify-save", "middleware request", "async cycle", "bytes / session"]]
    for name, title in KEY_ROWS.items():
        if name not in data.get("sync", {}):
            continue
        size = memory.get(name, {}).get("per_session")
        floor = memory.get(floor_of(name), {}).get("per_session")
        size_cell = "n/a" if size is None else f"{size:,.0f}"
        if size is not None and floor and name not in FLOORS:
            size_cell += f", {size / floor:.2f} x"
        rows.append(
            [
                title,
                _key_cell(data["sync"], name, "cycle"),
                _key_cell(data["sync"], name, "middleware"),
                _key_cell(data.get("async", {}), name, "acycle"),
                size_cell,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "  ".join("=" * width for width in widths)
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    notes = data["notes"]
    noises = ratio_noises(data)
    ours = sorted(noise for cell, noise in noises.items() if cell.split("/")[0] in OURS)
    noise = (
        [
            "",
            f"Noise of this run: a ratio of our rows could move by ±{statistics.median(ours):.0%} "
            f"(median cell; worst ±{ours[-1]:.0%}) in another run, from the spread of "
            'its per-round ratios (RESULTS.md, "Noise").',
        ]
        if ours
        else []
    )
    return [
        f"Key rows of the run of {notes['date']} ({notes.get('cores', '?')} cores, "
        f"{notes['plan']['rounds']} rounds; ratios to the floor on the same server, "
        "measured in the same rounds; one user per session, the defaults unless said):",
        "",
        rule,
        text[0],
        rule,
        *text[1:],
        rule,
        *noise,
    ]


def update_readme(data: dict[str, Any], readme: Path) -> bool:
    """Rewrite README's key-rows block; False when the README has no such block."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    block = "\n".join([README_START, "", *key_rows(data), "", README_END])
    readme.write_text(text[:start] + block + text[end + len(README_END) :])
    return True


def write_report(data: dict[str, Any], path: Path) -> None:
    out: list[str] = [
        "# Benchmark results",
        "",
        "Written by `python3 benchmarks/run.py` (see `benchmarks/README.md`). Every engine runs "
        "in its own process against one redis-server; measurements are interleaved across "
        "engines (A B C, B C A, C A B ...). A cell is the median over the rounds of each "
        "round's median operation (req/s: of each round's run); × floor divides it by the "
        "floor's, measured in the same rounds. The floor is raw redis-py with hiredis doing "
        "the least a session store can: GET + `json.loads`; `json.dumps` + SET EX.",
        "",
        "## Machine",
        "",
        *machine(data),
        "",
        "## Targets (issue 20)",
        "",
        *targets(data),
        "",
        "## Earlier targets still checked (issue 8)",
        "",
        *issue8_targets(data),
        "",
        "## Noise",
        "",
        *noise_section(data),
        "",
        "## Session operations, sync (µs per operation · × floor)",
        "",
        *ops_table(data.get("sync", {}), [op for op in OP_TITLES if not op.startswith("a")]),
        "",
        "- load: `SessionStore(key).load()`; read-modify-save: a new store, `get` "
        "`visits`, set it + 1, `save()`; create: a new store, `update(payload)`, `save()`; "
        "exists: `exists(key)`; delete: `SessionStore(key).delete()`; cycle_key: "
        "`SessionStore(key).cycle_key()`; middleware request: RequestFactory GET through the "
        "session middleware to a counter view (load, +1, save, cookie).",
        "- The payload: an authenticated shopper, 15 keys, about 1 KB of JSON "
        "(`benchmarks/payload.py`). The per-operation floor calls redis-py directly; its "
        "middleware row uses `benchmarks/floor_engine.py`, the same commands as a Django engine.",
        *noise_lines(data.get("sync", {})),
        "",
        "## What each feature costs (our defaults, with or without it)",
        "",
        "Differences of medians between two of our rows measured in the same rounds; "
        "our defaults keep the per-user index on, so its row is what it adds.",
        "",
        *feature_table(data),
        "",
        "## Server time per operation (µs · × floor)",
        "",
        "From `INFO commandstats`, reset before each cell: the time the server spent in "
        "the commands each operation sent. A command that a Lua script runs has its own "
        "`cmdstat_*` line besides being inside the script's (EVALSHA's) time; it is "
        "counted once, through the script (which commands the client sends and which its "
        "scripts run is seen once per operation with `MONITOR` during the warm-up). "
        "Parsing requests and writing replies is not in it: the next table has the "
        "server's whole CPU.",
        "",
        *ops_table(data.get("sync_server", {}), [op for op in OP_TITLES if not op.startswith("a")]),
        "",
        "## Server CPU per operation (µs · × floor)",
        "",
        "The server's main-thread CPU (user + system, `INFO cpu`) over each cell, per "
        "operation: the commands, the protocol and the event loop.",
        "",
        *ops_table(
            data.get("sync_server_cpu", {}), [op for op in OP_TITLES if not op.startswith("a")]
        ),
        "",
        "## Client CPU per operation (µs · × floor)",
        "",
        "The same operations, counting only the CPU time of the engine's own process (the "
        "mean over each round, median over the rounds): what the engine's Python costs, "
        "without the waits on Redis or on the other jobs of a shared machine. Server-side "
        "work (a Lua script, a database) is not in it.",
        "",
        *ops_table(data.get("sync_cpu", {}), [op for op in OP_TITLES if not op.startswith("a")]),
        "",
        "## Session operations, async (µs per operation · × floor)",
        "",
        *ops_table(data.get("async", {}), ["aget", "acycle", "amiddleware"]),
        "",
        "- aget: `await SessionStore(key).aget('visits')`; async read-modify-save: `aget`, "
        "`aset`, `asave()`; async middleware request: an async counter view through the "
        "middleware in async mode. The floor uses `redis.asyncio`; Django's engines use its "
        "default `sync_to_async` versions (the cache engine awaits its cache's `aget`, which "
        "Django's and django-redis's caches also run in a thread).",
        *noise_lines(data.get("async", {})),
        "",
        f"## Redis memory per session ({data.get('memory_n', 0):,} sessions)",
        "",
        *memory_table(data.get("memory", {})),
        "",
        "- `used_memory` from `INFO memory` before and after creating the sessions (each with "
        "a slightly different payload, so sizes spread over allocator size classes), divided "
        "by their number: key, value, expiry and Redis' per-key overhead. `MEMORY USAGE` "
        "(mean of up to 200 keys) counts the key and value only. The floor stores the same "
        "compact JSON under `session:` + the 32-character key, with EX.",
        "",
        "## HTTP (wrk, loopback)",
        "",
    ]
    if "http" in data:
        plan = data["notes"]["plan"]
        out += [
            *http_table(data["http"]),
            "",
            f"- gunicorn (2 sync workers) serves the sync counter view, uvicorn (2 workers, "
            f"uvloop + httptools) the async one (`benchmarks/urls.py`); each engine has its own "
            f"server. wrk: 1 thread, {plan['http_connections']} connections, "
            f"{plan['http_seconds']} s per run, {plan['http_rounds']} interleaved rounds; each "
            f"request carries the cookie of one of {plan['http_sessions']} sessions holding the "
            "payload, and every request saves (`visits` + 1).",
            "- SQLite runs in WAL mode; PostgreSQL through Django's psycopg connection pool.",
        ]
    else:
        out.append(f"Skipped: {data.get('http_skipped', 'not run')}.")
    if data.get("skipped") or data.get("failures"):
        out += ["", "## Engines skipped or failed", ""]
        out += [f"- {BY_NAME[name].label}: {why}" for name, why in data["skipped"].items()]
        out += [f"- {cell}: {why}" for cell, why in data["failures"].items()]
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    # Re-render the Markdown from a saved run: python -m benchmarks.report [results.json]
    here = Path(__file__).parent
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "results" / "latest.json"
    data = json.loads(source.read_text())
    write_report(data, here / "RESULTS.md")
    from benchmarks.chart import write_chart

    write_chart(data, here / "chart.svg")
    if not data["notes"].get("quick"):
        update_readme(data, here.parent / "docs" / "benchmarks.rst")
