"""Quiet mode's settings and schedule: windows of local time, crossing midnight."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashbay.agent.daemon.config import load_config
from hashbay.agent.thermal.quiet import QuietSettings, quiet_active
from hashbay.drivers.errors import ConfigError

from .support import write_config


def at(hh_mm: str) -> datetime.datetime:
    hours, minutes = hh_mm.split(":")
    return datetime.datetime(2026, 3, 2, int(hours), int(minutes), 30)


def test_night_window_crosses_midnight() -> None:
    night = ("22:00-07:00",)
    assert quiet_active("schedule", night, at("22:00"))
    assert quiet_active("schedule", night, at("23:59"))
    assert quiet_active("schedule", night, at("00:00"))
    assert quiet_active("schedule", night, at("06:59"))
    assert not quiet_active("schedule", night, at("07:00"))
    assert not quiet_active("schedule", night, at("12:00"))
    assert not quiet_active("schedule", night, at("21:59"))


def test_on_and_off_ignore_the_schedule() -> None:
    assert quiet_active("on", (), at("12:00"))
    assert not quiet_active("off", ("00:00-00:00",), at("12:00"))


def test_several_windows_and_all_day() -> None:
    windows = ("12:00-13:00", "22:30-06:15")
    assert quiet_active("schedule", windows, at("12:30"))
    assert quiet_active("schedule", windows, at("05:00"))
    assert not quiet_active("schedule", windows, at("14:00"))
    assert quiet_active("schedule", ("08:00-08:00",), at("03:00"))  # start == end: all day


minutes = st.integers(min_value=0, max_value=24 * 60 - 1)


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@given(start=minutes, end=minutes, now=minutes)
def test_a_window_is_the_minutes_from_its_start_up_to_its_end(
    start: int, end: int, now: int
) -> None:
    window = f"{hhmm(start)}-{hhmm(end)}"
    local = datetime.datetime(2026, 3, 2, now // 60, now % 60)
    expected = (now - start) % (24 * 60) < (end - start) % (24 * 60) or start == end
    assert quiet_active("schedule", (window,), local) == expected


def test_the_default_is_off_with_a_night_window_ready() -> None:
    quiet = QuietSettings()
    assert quiet.mode == "off"
    assert quiet.schedule == ("22:00-07:00",)


def test_quiet_section_loads_from_toml(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "a.toml",
        '[quiet]\nmode = "schedule"\nmax_dba = 60\nschedule = ["23:00-06:00", "13:00-14:00"]\n',
    )
    quiet = load_config(path).quiet
    assert quiet.mode == "schedule"
    assert quiet.max_dba == 60.0
    assert quiet.schedule == ("23:00-06:00", "13:00-14:00")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('schedule = ["25:00-07:00"]', r"quiet\.schedule\[0\]: .*'25:00' is not a time of day"),
        ('schedule = ["22:00 to 07:00"]', r"quiet\.schedule\[0\]: must be .*matching"),
        ('mode = "schedule"\nschedule = []', "quiet.mode: 'schedule' needs at least one window"),
        ('mode = "loud"', "quiet.mode: must be one of 'off', 'on', 'schedule'"),
        ("max_dba = 5", "quiet.max_dba: must be a number from 30 to 120"),
    ],
)
def test_bad_quiet_settings_are_refused_with_the_key(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = write_config(tmp_path / "bad.toml", f"[quiet]\n{toml}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_an_unknown_mode_at_run_time_is_an_error() -> None:
    with pytest.raises(ValueError, match="quiet mode 'loud'"):
        quiet_active("loud", (), at("12:00"))
