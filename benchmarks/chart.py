"""Draw a run's key figures as one SVG chart: every engine side by side, ours highlighted.

Written by the harness next to ``RESULTS.md`` from the same data (and by
``python -m benchmarks.report``), so the README's picture and its tables come from
one run. Plain SVG text: no plotting library needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from benchmarks.engines import BY_NAME
from benchmarks.report import FLOORS, OURS, floor_of, median, to_floor

WIDTH = 1100
COLUMN = WIDTH // 2
LABEL_WIDTH = 265
BAR_HEIGHT = 15
ROW = 19
# Time panels end at this multiple of the floor; longer bars are drawn broken.
OFF_SCALE = 5
PANEL_TOP = 40  # the panel's title and unit
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
COLOURS = {"ours": "#d6336c", "floor": "#868e96", "peer": "#74a9cf"}


@dataclass(frozen=True)
class Bar:
    engine: str
    value: float
    ratio: float | None  # to the floor, measured in the same rounds


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    better: str  # "lower" or "higher"
    bars: list[Bar]
    ratio_note: str = "× floor: ratio of medians, same rounds"


def _op_panel(data: dict[str, Any], section: str, op: str, title: str) -> Panel | None:
    timings = data.get(section, {})
    bars = []
    for name, by_op in timings.items():
        value = median(by_op.get(op, []))
        if value is not None:
            floor = timings.get(floor_of(name), {}).get(op, [])
            ratio = None if name in FLOORS else to_floor(by_op[op], floor)
            bars.append(Bar(name, value, ratio))
    return Panel(title, "µs per operation", "lower", bars) if bars else None


def _http_panel(data: dict[str, Any], kind: str) -> Panel | None:
    by_engine = data.get("http", {}).get(kind, {})
    floor = [run["rps"] for run in by_engine.get("floor", [])]
    bars = []
    for name, runs in by_engine.items():
        rps = [run["rps"] for run in runs]
        value = median(rps)
        if value is not None:
            bars.append(Bar(name, value, None if name == "floor" else to_floor(rps, floor)))
    title = f"HTTP under {kind}, a page that saves its session"
    return Panel(title, "requests per second", "higher", bars) if bars else None


def _memory_panel(data: dict[str, Any]) -> Panel | None:
    memory = data.get("memory", {})

    def ratio(name: str, value: float) -> float | None:
        floor = memory.get(floor_of(name), {}).get("per_session")
        return None if name in FLOORS or not floor else value / floor

    bars = [
        Bar(name, row["per_session"], ratio(name, row["per_session"]))
        for name, row in memory.items()
        if "per_session" in row
    ]
    title = f"Redis memory, {data.get('memory_n', 0):,} sessions"
    note = "× floor: over the floor's"
    return Panel(title, "bytes per session", "lower", bars, note) if bars else None


def panels(data: dict[str, Any]) -> list[Panel]:
    found = [
        _op_panel(data, "sync", "cycle", "Read-modify-save (sync)"),
        _op_panel(data, "sync", "middleware", "Request through the session middleware (sync)"),
        _op_panel(data, "async", "acycle", "Read-modify-save (async)"),
        _op_panel(data, "async", "amiddleware", "Request through the middleware (async)"),
        *(_http_panel(data, kind) for kind in data.get("http", {})),
        _memory_panel(data),
    ]
    return [panel for panel in found if panel is not None]


def _colour(engine: str) -> str:
    if engine in OURS:
        return COLOURS["ours"]
    return COLOURS["floor"] if engine in FLOORS else COLOURS["peer"]


def _label(engine: str) -> str:
    known = BY_NAME.get(engine)
    return known.label if known else engine


def _panel_svg(panel: Panel, x: int, y: int) -> list[str]:
    scale_width = COLUMN - LABEL_WIDTH - 150
    top = max(bar.value for bar in panel.bars) or 1.0
    floor = next((bar.value for bar in panel.bars if bar.engine == "floor"), None)
    if floor and panel.better == "lower":
        # Keep the engines near the floor readable: slower ones run off the scale.
        top = min(top, OFF_SCALE * floor)
    clipped_any = any(bar.value > top for bar in panel.bars)
    out = [
        f"<text x='{x}' y='{y + 16}' font-size='14' font-weight='bold' {FONT}>"
        f"{escape(panel.title)}</text>",
        f"<text x='{x}' y='{y + 32}' font-size='11' fill='#555' {FONT}>"
        f"{escape(panel.unit)}, {panel.better} is better; {escape(panel.ratio_note)}"
        + (f"; broken: over {OFF_SCALE} ×" if clipped_any else "")
        + "</text>",
    ]
    for i, bar in enumerate(panel.bars):
        row_y = y + PANEL_TOP + i * ROW
        ours = bar.engine in OURS
        weight = " font-weight='bold'" if ours else ""
        width = max(1.0, min(bar.value, top) / top * scale_width)
        clipped = bar.value > top
        value = f"{bar.value:,.0f}"
        if bar.ratio is not None:
            value += f" · {bar.ratio:.2f}×"
        out += [
            f"<text x='{x + LABEL_WIDTH - 6}' y='{row_y + 12}' font-size='11' "
            f"text-anchor='end'{weight} {FONT}>{escape(_label(bar.engine))}</text>",
            f"<rect x='{x + LABEL_WIDTH}' y='{row_y}' width='{width:.1f}' "
            f"height='{BAR_HEIGHT}' fill='{_colour(bar.engine)}'>"
            f"<title>{escape(_label(bar.engine))}: {escape(value)}</title></rect>",
        ]
        if clipped:  # a break near the end: the bar is longer than drawn
            out.append(
                f"<path d='M{x + LABEL_WIDTH + width - 14:.1f},{row_y + BAR_HEIGHT} "
                f"l5,-{BAR_HEIGHT} m3,0 l-5,{BAR_HEIGHT}' stroke='white' stroke-width='2'/>"
            )
        out += [
            f"<text x='{x + LABEL_WIDTH + width + 5:.1f}' y='{row_y + 12}' font-size='11'"
            f"{weight} {FONT}>{escape(value)}</text>",
        ]
    return out


def render(data: dict[str, Any]) -> str:
    found = panels(data)
    heights = [PANEL_TOP + len(panel.bars) * ROW + 24 for panel in found]
    rows = [max(heights[i : i + 2]) for i in range(0, len(found), 2)]
    header = 64
    height = header + sum(rows) + 10
    notes = data.get("notes", {})
    when = notes.get("date", "?")
    rounds = notes.get("plan", {}).get("rounds", "?")
    body = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        f"viewBox='0 0 {WIDTH} {height}'>",
        f"<rect width='{WIDTH}' height='{height}' fill='white'/>",
        f"<text x='16' y='26' font-size='17' font-weight='bold' {FONT}>Session engines on one "
        "Redis: medians of interleaved rounds</text>",
        f"<text x='16' y='46' font-size='12' fill='#555' {FONT}>{escape(str(when))}, "
        f"{rounds} rounds; revision {escape(str(notes.get('revision', '?')))}. "
        f"<tspan fill='{COLOURS['ours']}' font-weight='bold'>django_redis_sessions</tspan>, "
        f"<tspan fill='{COLOURS['floor']}' font-weight='bold'>the floor</tspan> (raw redis-py), "
        f"<tspan fill='{COLOURS['peer']}' font-weight='bold'>other engines</tspan>. "
        "Full tables: benchmarks/RESULTS.md</text>",
    ]
    y = header
    for row, row_height in enumerate(rows):
        for column in range(2):
            index = row * 2 + column
            if index < len(found):
                body += _panel_svg(found[index], 16 + column * COLUMN, y)
        y += row_height
    body.append("</svg>")
    return "\n".join(body) + "\n"


def write_chart(data: dict[str, Any], path: Path) -> None:
    path.write_text(render(data), encoding="utf-8")
