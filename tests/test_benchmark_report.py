"""The benchmark's server-side figures (benchmarks/serverstats.py) and README's key rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from benchmarks import report
from benchmarks.serverstats import command_us, top_level_shares

# A script that runs SET and GET itself, beside a SET the client sends.
SCRIPT = "redis.call('SET', KEYS[1], 'x') return redis.call('GET', KEYS[1])"


def operation(r: redis.Redis) -> None:
    r.set("bench:k", "v")
    r.eval(SCRIPT, 1, "bench:k")


@pytest.mark.single_only  # MONITOR and commandstats of one server
def test_server_time_counts_what_a_script_runs_once(r: redis.Redis) -> None:
    with r.monitor() as monitor:
        operation(r)
        r.echo("end")
        lines = []
        while (line := monitor.next_command())["command"] != "ECHO end":
            lines.append(line)
    shares = top_level_shares(lines)
    assert shares == {"set": 0.5, "eval": 1.0, "get": 0.0}

    r.config_resetstat()
    operation(r)
    stats = r.info("commandstats")
    usec = {name.removeprefix("cmdstat_"): row["usec"] for name, row in stats.items()}
    # The script's own SET and GET are inside EVAL's time: only the client's SET is added.
    assert command_us(stats, shares) == pytest.approx(usec["eval"] + usec["set"] / 2)
    assert "config|resetstat" in usec or "config" in usec  # the run's own: left out
    assert command_us(stats, {}) > command_us(stats, shares)


def run_data() -> dict[str, Any]:
    return {
        "notes": {"date": "2026-12-07 21:00 UTC", "cores": 2, "plan": {"rounds": 3}},
        "sync": {
            "floor": {"cycle": [100.0, 100.0], "middleware": [200.0, 200.0]},
            "ours": {"cycle": [120.0, 120.0], "middleware": [220.0, 220.0]},
            "floor_valkey": {"cycle": [90.0, 90.0], "middleware": [180.0, 180.0]},
            "ours_valkey": {"cycle": [99.0, 99.0], "middleware": [198.0, 198.0]},
        },
        "async": {"floor": {"acycle": [50.0]}, "ours": {"acycle": [60.0]}},
        "memory": {"floor": {"per_session": 1000.0}, "ours": {"per_session": 1500.0}},
    }


def test_key_rows_divide_by_the_floor_of_the_same_server() -> None:
    lines = report.key_rows(run_data())
    table = "\n".join(lines)
    assert "120 µs, 1.20 x" in table and "1,500, 1.50 x" in table
    assert "99 µs, 1.10 x" in table  # Valkey's row over Valkey's floor, not Redis's
    ours = next(line for line in lines if line.startswith("**django_redis_sessions**"))
    assert "60 µs, 1.20 x" in ours
    # An RST simple table: three rules of the same shape around the header and the body.
    rules = [line for line in lines if line and set(line) <= {"=", " "}]
    assert len(rules) == 3 and len(set(rules)) == 1


def test_update_readme_rewrites_only_its_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.rst"
    before, after = "Intro\n\n", "\n\nOutro\n"
    readme.write_text(f"{before}{report.README_START}\n\nold table\n\n{report.README_END}{after}")
    assert report.update_readme(run_data(), readme)
    text = readme.read_text()
    assert text.startswith(before + report.README_START) and text.endswith(
        report.README_END + after
    )
    assert "old table" not in text and "120 µs, 1.20 x" in text
    readme.write_text("no block here\n")
    assert not report.update_readme(run_data(), readme)
    assert readme.read_text() == "no block here\n"
