"""The benchmark chart (benchmarks/chart.py) is valid SVG and says what the run measured."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from benchmarks import chart

SVG = "{http://www.w3.org/2000/svg}"


def run_data() -> dict[str, object]:
    def runs(rps: float) -> list[dict[str, float]]:
        return [{"rps": rps, "non2xx": 0, "socket_errors": 0, "p50_us": 1, "p99_us": 2}] * 3

    return {
        "notes": {"date": "2026-11-29 07:00 UTC", "plan": {"rounds": 3}, "revision": "abc1234"},
        "sync": {
            "floor": {"cycle": [100.0, 110.0, 90.0], "middleware": [200.0, 200.0, None]},
            "ours": {"cycle": [120.0, 130.0, 110.0], "middleware": [210.0, 230.0, 220.0]},
            "django_cache": {"cycle": [300.0, 280.0, None], "middleware": [None, None, None]},
        },
        "async": {"floor": {"acycle": [50.0]}, "ours": {"acycle": [60.0]}},
        "http": {"gunicorn": {"floor": runs(1000), "ours": runs(950), "db_pg": runs(400)}},
        "memory_n": 10000,
        "memory": {
            "floor": {"per_session": 1000.0},
            "ours": {"per_session": 1020.0},
            "ours_zlib": {"per_session": 620.0},
            "djredis_pickle": {"error": "boom"},
        },
    }


def texts(root: ET.Element) -> list[str]:
    return ["".join(node.itertext()) for node in root.iter(f"{SVG}text")]


def test_chart_shows_each_engine_with_its_ratio_to_the_floor(tmp_path: Path) -> None:
    path = tmp_path / "chart.svg"
    chart.write_chart(run_data(), path)
    root = ET.parse(path).getroot()  # well-formed XML
    words = texts(root)
    titles = [t for t in words if t.startswith(("Read-modify", "Request", "HTTP", "Redis memory"))]
    assert titles == [
        "Read-modify-save (sync)",
        "Request through the session middleware (sync)",
        "Read-modify-save (async)",
        "HTTP under gunicorn, a page that saves its session",
        "Redis memory, 10,000 sessions",
    ]
    # Medians, and the ratio of medians to the floor's, as in RESULTS.md.
    assert "120 · 1.20×" in words and "100" in words and "290 · 2.90×" in words
    assert "950 · 0.95×" in words and "620 · 0.62×" in words
    # Ours highlighted: its bars in our colour, its labels bold; the others not.
    bars = {
        "".join(rect.itertext()).rsplit(": ", 1)[0]: rect.get("fill")
        for rect in root.iter(f"{SVG}rect")
        if rect.find(f"{SVG}title") is not None
    }
    assert bars["ours (django_redis_sessions)"] == chart.COLOURS["ours"]
    assert bars["ours, compress_min_bytes=256"] == chart.COLOURS["ours"]
    assert bars["floor: redis-py + hiredis, GET / SET EX"] == chart.COLOURS["floor"]
    assert bars["cache on Django's RedisCache"] == chart.COLOURS["peer"]
    # A bar past 5 × the floor is drawn broken at the edge; its figure stays true.
    sync_cycle = [r for r in root.iter(f"{SVG}rect") if "290 · 2.90×" in "".join(r.itertext())]
    assert sync_cycle and not list(root.iter(f"{SVG}path"))
    # A failed cell or section is left out, not drawn as zero.
    assert "cache on django-redis, pickle" not in bars
    assert all(float(rect.get("width", "1")) > 0 for rect in root.iter(f"{SVG}rect"))


def test_chart_of_an_empty_run_is_still_valid() -> None:
    root = ET.fromstring(chart.render({}))
    assert root.tag == f"{SVG}svg"
    assert chart.panels({}) == []


def test_bars_far_above_the_floor_are_broken() -> None:
    data = {
        "sync": {
            "floor": {"cycle": [100.0]},
            "ours": {"cycle": [120.0]},
            "db_pg": {"cycle": [9000.0]},
        }
    }
    root = ET.fromstring(chart.render(data))
    widths = {
        "".join(rect.itertext()).rsplit(": ", 1)[0]: float(rect.get("width", "0"))
        for rect in root.iter(f"{SVG}rect")
        if rect.find(f"{SVG}title") is not None
    }
    assert widths["db, PostgreSQL"] == pytest.approx(
        widths["floor: redis-py + hiredis, GET / SET EX"] * 5
    )
    assert (
        widths["ours (django_redis_sessions)"] > widths["floor: redis-py + hiredis, GET / SET EX"]
    )
    assert len(list(root.iter(f"{SVG}path"))) == 1
    assert "9,000 · 90.00×" in texts(root)
    assert any("broken: over 5 ×" in t for t in texts(root))
