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


def targets_data(create: float = 150.0, valkey_save: float = 1.5) -> dict[str, Any]:
    """Five rounds of our defaults and the floor on both servers: every figure a target reads."""

    def rounds(value: float, wobble: float = 0.0) -> list[float | None]:
        return [value - 2 * wobble, value - wobble, value, value + wobble, value + 2 * wobble]

    def ops(scale: float, create: float) -> dict[str, list[float | None]]:
        return {
            "load": rounds(50 * scale),
            "cycle": rounds(100 * scale, wobble=scale),
            "create": rounds(create),
            "middleware": rounds(200 * scale),
        }

    def server(load: dict[str, float], save: dict[str, float]) -> dict[str, list[Any]]:
        return {"load": [load] * 5, "cycle": [{**load, **save}] * 5}

    get = {"get": 1.0}
    return {
        "notes": {"date": "2026-12-07 21:00 UTC", "cores": 2, "plan": {"rounds": 5}},
        "sync": {
            "floor": ops(1.0, 100.0),
            "ours": ops(1.2, create),
            "floor_valkey": ops(1.0, 100.0),
            "ours_valkey": ops(1.3, 170.0),
        },
        "async": {
            "floor": {"acycle": rounds(50.0)},
            "ours": {"acycle": rounds(60.0)},
            "floor_valkey": {"acycle": rounds(50.0)},
            "ours_valkey": {"acycle": rounds(70.0)},
        },
        "sync_server_commands": {
            "floor": server(get, {"set": 1.1}),
            # A script's own SET has its line at 0 µs: its time is in EVALSHA's.
            "ours": server(get, {"evalsha": 10.7, "set": 0.0}),
            "floor_valkey": server(get, {"set": 1.0}),
            "ours_valkey": server(get, {"set": valkey_save}),
        },
        "memory": {
            "floor": {"per_session": 1000.0},
            "ours": {"per_session": 1050.0},
            "floor_valkey": {"per_session": 1000.0},
            "ours_valkey": {"per_session": 1200.0},
        },
    }


def verdicts(data: dict[str, Any]) -> dict[str, list[bool | None]]:
    return {
        title.split(" ≤")[0]: [ok for _, ok in cells] for title, cells in report.target_cells(data)
    }


def test_issue_20_targets_are_verdicts_of_the_figures() -> None:
    got = verdicts(targets_data())
    assert got == {
        # Redis 7 saves by script: the goal is for servers with SET IFEQ; Valkey 1.5 / 1.0.
        "Redis CPU per save": [None, True],
        "sign-in (a new user's session)": [True, False],  # 1.5x, 1.7x
        "memory per session": [True, False],  # 1.05x, 1.2x
        "read-modify-save": [True, False],  # 1.2x, 1.3x
        "middleware request": [False, False],  # 1.2x, 1.3x
        "async read-modify-save": [True, False],  # 1.2x, 1.4x
        "load": [False, False],
    }
    # The same targets with other figures: the verdicts follow them.
    slower = verdicts(targets_data(create=170.0, valkey_save=2.5))
    assert slower["sign-in (a new user's session)"] == [False, False]
    assert slower["Redis CPU per save"] == [None, False]


def test_save_time_is_what_the_cycle_sends_beyond_a_load() -> None:
    data = targets_data()
    floor_us, floor_commands = report.save_server_us(data, "floor")
    ours_us, ours_commands = report.save_server_us(data, "ours")
    assert floor_us == pytest.approx(1.1) and floor_commands == ["set"]
    assert ours_us == pytest.approx(10.7) and ours_commands == ["evalsha"]
    cells = dict(report.target_cells(data))
    redis_cell, valkey_cell = next(v for k, v in cells.items() if k.startswith("Redis CPU"))
    assert redis_cell == (
        "10.7 µs (EVALSHA) vs 1.1 µs (SET): 9.7× (script: no native compare-and-set here)",
        None,
    )
    assert valkey_cell[0] == "1.5 µs (SET) vs 1.0 µs (SET): 1.5×"


def test_a_target_not_measured_has_no_verdict() -> None:
    data = targets_data()
    for section in ("sync", "async", "sync_server_commands", "memory"):
        for name in ("floor_valkey", "ours_valkey"):
            del data[section][name]
    for title, (redis_cell, valkey_cell) in report.target_cells(data):
        assert redis_cell[1] is not None or "script" in redis_cell[0], title
        assert valkey_cell == ("not measured", None), title
    assert report.issue8_targets(data) == [
        "Not measured in this run (needs the HTTP section or the peers)."
    ]


def test_a_ratios_noise_comes_from_its_rounds() -> None:
    floor: list[float | None] = [100.0] * 9
    steady: list[float | None] = [120.0] * 9
    assert report.ratio_noise(steady, floor) == 0
    wobbly: list[float | None] = [110.0, 115.0, 120.0, 125.0, 130.0] * 2
    noise = report.ratio_noise(wobbly, [100.0] * 10)
    assert noise is not None
    # IQR 0.125 over the median 1.2, 10 rounds: 1.96 * 1.2533 * (0.1042 / 1.349) / sqrt(10).
    assert noise == pytest.approx(0.060, abs=0.001)
    assert report.ratio_noise([120.0, None, 120.0], [100.0] * 3) is None  # too few rounds
    # Quoted with twice that: disturbances span several rounds (see the report's "Noise").
    assert report.stated_noise(wobbly, [100.0] * 10) == pytest.approx(2 * noise)
    assert report.stated_noise([120.0, None, 120.0], [100.0] * 3) is None


def test_the_report_has_issue_20s_targets_every_feature_and_the_noise(tmp_path: Path) -> None:
    data = targets_data()
    data["notes"].update(
        cpu="test CPU",
        platform="test",
        load_before=[0.1, 0.2, 0.3],
        load_after=[0.4, 0.5, 0.6],
        revision="abc1234",
        postgres="skipped",
        servers={"redis": "redis-server 7.0.15", "valkey": "valkey-server 8.1.8"},
        pinned=[1],
        versions={"python": "3.12", "hiredis parser": "yes"},
        plan={"rounds": 5, "n": 1, "max_s": 1, "warmup": 1},
    )
    data.update(skipped={}, failures={})
    for row in data["memory"].values():
        row.update(memory_usage=900.0, value_bytes=800.0, key_bytes=40.0)
    path = tmp_path / "RESULTS.md"
    report.write_report(data, path)
    text = path.read_text()
    assert "## Targets (issue 20)" in text and "(issue 8)" in text
    assert "| Redis CPU per save ≤ 2 × a plain SET" in text
    assert "redis-server 7.0.15, valkey-server 8.1.8" in text and "CPU 1" in text
    for feature in ("per-user index", "encryption", "idle + absolute timeouts", "compression"):
        assert f"| {feature}" in text
    assert "## Noise" in text and "over our rows'" in text


def test_the_machine_line_states_other_jobs_share_of_the_run_cpu() -> None:
    data: dict[str, Any] = {
        "notes": {"pinned": [1]},
        "sync_other_load": [{"others": 0.5, "steal": 0.0}, None, {"others": 0.2, "steal": 0.01}],
        "async_other_load": [{"others": 0.3, "steal": 0.0}],
    }
    assert report.other_load(data) == [
        "- Other jobs' share of CPU 1 (the run's) during the timed rounds: median 30%, "
        "worst round 50%; hypervisor steal up to 1%"
    ]
    data["async_other_load"] = [{"others": 0.3, "steal": 0.0, "rest": 0.9}]
    assert report.other_load(data)[0].endswith(
        "; the other CPUs were busy 90% (median), 90% (worst round)"
    )
    assert report.other_load({"notes": {}}) == []
