"""Configuration: every bad file is refused with one line naming file, key and what is allowed."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.agent.daemon.config import default_config_path, load_config, parse_config
from hashbay.drivers.errors import ConfigError

from .support import AGENT

REPO = Path(__file__).resolve().parent.parent


def default_raw() -> dict[str, Any]:
    return tomllib.loads(default_config_path().read_text())


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, "test.toml")
    return str(caught.value)


def test_default_config_describes_the_simulated_rig() -> None:
    config = load_config(default_config_path())
    assert config.simulated
    assert len(config.slot) == 3
    assert len(config.fan) == 4
    assert all(slot.uart == "sim" for slot in config.slot)


def test_example_board_config_is_valid_and_real() -> None:
    config = load_config(REPO / "systemd" / "hashbay.toml")
    assert not config.simulated
    assert config.hardware.i2c_bus == "/dev/i2c-1"
    assert [s.uart for s in config.slot] == ["/dev/ttyAMA0", "/dev/ttyAMA3", "/dev/ttyAMA4"]


def test_unknown_key_names_file_key_and_suggests_the_right_one() -> None:
    raw = default_raw()
    raw["agent"]["pol_interval_s"] = 1.0
    message = refused(raw)
    assert message.startswith("test.toml: agent.pol_interval_s: unknown key")
    assert "poll_interval_s" in message


def test_unknown_section_is_refused() -> None:
    raw = default_raw() | {"agnet": {}}
    assert refused(raw).startswith("test.toml: agnet: unknown key")


def test_wrong_type_says_what_is_allowed() -> None:
    raw = default_raw()
    raw["agent"]["poll_interval_s"] = "fast"
    assert refused(raw) == (
        "test.toml: agent.poll_interval_s: must be a number from 0.05 to 10 s, "
        "got a string ('fast')"
    )


def test_boolean_is_not_accepted_as_a_number() -> None:
    raw = default_raw()
    raw["slot"][0]["presence_pin"] = True
    assert "slot[0].presence_pin: must be an integer from 0 to 27" in refused(raw)


@pytest.mark.parametrize(
    ("section", "key", "value", "allowed"),
    [
        ("agent", "poll_interval_s", 0.0, "a number from 0.05 to 10 s"),
        ("agent", "shutdown_timeout_s", 300, "a number from 0.5 to 30 s"),
        ("agent", "log_level", "verbose", "one of 'debug', 'info', 'warning', 'error'"),
        ("agent", "name", "Miner One", "a string matching"),
        ("agent", "state_dir", "relative/dir", "a string matching"),
        ("hardware", "i2c_bus", "/dev/sda", "a string matching"),
        ("limits", "safe_fan_duty", 0.2, "a number from 0.5 to 1"),
    ],
)
def test_out_of_range_values_are_refused(section: str, key: str, value: Any, allowed: str) -> None:
    raw = default_raw()
    raw.setdefault(section, {})[key] = value
    message = refused(raw)
    assert message.startswith(f"test.toml: {section}.{key}: must be {allowed}")
    assert repr(value) in message


def test_missing_required_wiring_is_named() -> None:
    raw = default_raw()
    del raw["slot"][1]["power_pin"]
    assert refused(raw) == "test.toml: slot[1].power_pin: missing; must be an integer from 0 to 27"


def test_too_many_slots_are_refused() -> None:
    raw = default_raw()
    raw["slot"] = raw["slot"] * 3
    assert "slot: needs at least 1 and at most 8 entries, got 9" in refused(raw)


def test_a_pin_wired_twice_is_refused() -> None:
    raw = default_raw()
    raw["slot"][2]["led_pin"] = raw["slot"][0]["alert_pin"]
    assert refused(raw) == "test.toml: slot[2].led_pin: pin 12 is already used by slot[0].alert_pin"


def test_simulated_and_real_buses_cannot_mix() -> None:
    raw = default_raw()
    raw["slot"][1]["uart"] = "/dev/ttyAMA3"
    assert "'sim' must be used for every bus or none" in refused(raw)


def test_safe_fan_duty_must_be_inside_the_duty_limits() -> None:
    raw = default_raw()
    raw["limits"] = {"fan_duty_max": 0.8, "safe_fan_duty": 1.0}
    assert "limits.safe_fan_duty: must lie within" in refused(raw)


def test_missing_file_and_broken_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[agent\nname = 1\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(broken)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"binary\.toml: cannot read"):
        load_config(binary)


def test_check_config_cli_exits_78_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        default_config_path().read_text().replace("poll_interval_s = 1.0", "poll_interval_s = -1")
    )
    done = subprocess.run([*AGENT, "--check-config", str(bad)], capture_output=True, text=True)
    assert done.returncode == 78
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"hashbay-agent: config error: {bad}: agent.poll_interval_s: "
        "must be a number from 0.05 to 10 s, got -1.0"
    ]


def test_check_config_cli_accepts_the_default() -> None:
    path = default_config_path()
    done = subprocess.run([*AGENT, "--check-config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{path}: ok"


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(["agent", "hardware", "limits", "fan", "slot", "poll_interval_s", "uart"])


@settings(max_examples=300, deadline=None)
@given(
    section=keys,
    inner_key=st.one_of(keys, st.text(max_size=12)),
    value=toml_values,
)
def test_any_garbage_in_a_config_gives_only_config_error(
    section: str, inner_key: str, value: Any
) -> None:
    raw = default_raw()
    target = raw.get(section)
    if isinstance(target, dict):
        target[inner_key] = value
    elif isinstance(target, list) and target:
        target[0][inner_key] = value
    else:
        raw[section] = value
    try:
        parse_config(raw, "fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ")
