"""README and the systemd unit stay true: generated reference, two commands, verified unit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hashbay.tools.docs import BLOCKS, README, readme_block

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "hashbay-agent.service"


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_readme_generated_references_match_the_code(block: str) -> None:
    assert readme_block(README.read_text(), block) == BLOCKS[block]().strip("\n"), (
        f"README's {block} is stale: run tools/run docs"
    )


def test_quick_start_is_exactly_the_two_commands_and_ci_runs_the_test_one() -> None:
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.strip().splitlines()]
    assert commands == ["tools/run demo", "tools/run test"]
    assert os.access(REPO / "tools" / "run", os.X_OK)
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^\s*(exec\s+)?tools/run test\b", ci, re.MULTILINE)


def test_unit_has_notify_watchdog_and_hardening() -> None:
    text = UNIT.read_text()
    for directive in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "User=hashbay",
        "SupplementaryGroups=dialout i2c gpio",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "DevicePolicy=closed",
        "DeviceAllow=char-i2c rw",
        "DeviceAllow=char-gpiochip rw",
        "StateDirectory=hashbay",
        "RuntimeDirectory=hashbay",
        "Nice=-5",
        "CPUWeight=400",
        "RestrictRealtime=yes",
    ]:
        assert re.search(rf"^{re.escape(directive)}", text, re.MULTILINE), directive


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_systemd_analyze_verify_accepts_the_unit_without_warnings(tmp_path: Path) -> None:
    agent = Path(sys.executable).with_name("hashbay-agent")
    unit = tmp_path / "hashbay-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/hashbay/bin/hashbay-agent", str(agent)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
    # A misspelt directive is reported, so the check above is not vacuous.
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    broken = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
    )
    assert "Unknown key 'WatchdogSecs'" in broken.stderr


def test_packaged_entry_points_report_the_version() -> None:
    for script in ("hashbay", "hashbay-agent"):
        path = Path(sys.executable).with_name(script)
        done = subprocess.run([str(path), "--version"], capture_output=True, text=True)
        assert done.returncode == 0
        assert re.fullmatch(rf"{script} \d+\.\d+\.\d+\n", done.stdout)
