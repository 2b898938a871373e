"""`hashbay-agent --self-test` as a technician runs it: a real process on the simulated rig,
the table on stdout row by row, `--json` for scripts, and the exit code as the verdict."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support import AGENT, with_setting, write_config

SCENARIO = """
[[event]]
at_s = 0
do = "fan-stall 2"

[[event]]
at_s = 0
do = "sensor-lost 0 1"
"""


def quick_rig(tmp_path: Path, scenario: str = "") -> Path:
    """The packaged simulated rig at 20x, short boards, self-test waits fit for it."""
    config = write_config(tmp_path / "agent.toml")
    text = config.read_text()
    for table, key, value in (
        ("sim", "time_scale", "20"),
        ("sim", "chips_per_board", "42"),
        ("sim", "chips_per_domain", "1"),
        ("sim", "control_socket", "false"),
        ("selftest", "fan_settle_s", "3"),
        ("selftest", "fan_window_s", "4"),
        ("selftest", "led_blink_s", "1"),
    ):
        text = with_setting(text, table, key, value)
    if scenario:
        path = tmp_path / "scenario.toml"
        path.write_text(scenario)
        text = with_setting(text, "sim", "scenario", json.dumps(str(path)))
    config.write_text(text)
    return config


def self_test(config: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    runtime = str(tmp_path / "run")
    return subprocess.run(
        [*AGENT, "--self-test", "--config", str(config), "--runtime-dir", runtime, *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_healthy_rig_prints_a_table_and_exits_0(tmp_path: Path) -> None:
    config = quick_rig(tmp_path)
    done = self_test(config, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"hashbay self-test: sim-rig-01 ({config})"
    assert lines[1].split() == ["PART", "CHECK", "RESULT", "DETAIL"]
    assert lines[-1].startswith("PASSED (")
    rows = lines[2:-1]
    assert all(row.split()[0] in ("slot", "fan", "i2c", "psu", "chain", "safe") for row in rows)
    assert any(row.startswith("chain 2") and "42 BM1368 chips answered" in row for row in rows)
    assert rows[-1].startswith("safe state") and " pass " in rows[-1]
    assert "Traceback" not in done.stderr


def test_faults_fail_the_run_and_json_names_each_one(tmp_path: Path) -> None:
    config = quick_rig(tmp_path, SCENARIO)
    done = self_test(config, tmp_path, "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    failed = {(c["part"], c["item"].split(" ")[0]): c["detail"] for c in report["checks"]}
    failures = [(c["part"], c["item"]) for c in report["checks"] if c["verdict"] == "fail"]
    assert failures == [("slot 0", "sensor 1 0x49"), ("fan 2", "speed at 100% → 20% → 100%")]
    assert "did not answer" in failed[("slot 0", "sensor")]
    assert "not turning at full duty" in failed[("fan 2", "speed")]
    chains = [c for c in report["checks"] if c["part"].startswith("chain")]
    assert [c["verdict"] for c in chains] == ["skip", "skip", "skip"]
    assert all("fan 2 did not confirm its speed" in c["detail"] for c in chains)
    assert report["counts"]["fail"] == 2
    assert report["checks"][-1]["part"] == "safe state"


def test_self_test_options_alone_are_a_usage_error() -> None:
    for option in ("--json", "--no-power"):
        done = subprocess.run([*AGENT, option], capture_output=True, text=True, timeout=30)
        assert done.returncode == 2
        assert "--json and --no-power go with --self-test" in done.stderr
