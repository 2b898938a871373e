"""`hashbay-agent --check-config` and the start-up under hostile config files, from outside.

Whatever the file holds — huge, deep, binary, endless, a device, wrong numbers, missing
entries, files it names that are not there — the answer is exit 78 and one line of at
most ~300 characters naming the file and the key, never a traceback.
"""

from __future__ import annotations

import math
import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashbay.agent.core.settings import array_item_type, fields_of, is_table
from hashbay.agent.daemon.config import Config, default_config_path, parse_config
from hashbay.drivers.errors import ConfigError

from .support import AGENT, start_agent, with_setting

MAX_LINE = 330  # "hashbay-agent: config error: " + at most 300


def check_config(path: Path | str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, "--check-config", str(path)], capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_refusal(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 78, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr[:2000]
    line = lines[0]
    assert line.startswith("hashbay-agent: config error: "), line
    assert len(line) <= MAX_LINE, len(line)
    for word in words:
        assert word in line, line
    return line


def default_text() -> str:
    return default_config_path().read_text()


def real_bus_text() -> str:
    return (Path(__file__).resolve().parent.parent / "systemd" / "hashbay.toml").read_text()


# -- numbers ------------------------------------------------------------------------------


def float_settings() -> Iterator[tuple[str, str | None, str]]:
    """(table, index-or-None, key) of every float setting of every table."""
    for table in fields_of(Config):
        item = array_item_type(table.kind)
        cls = item if item is not None else table.kind
        if not is_table(cls):
            continue
        for info in fields_of(cls):
            if info.kind is float:
                yield table.name, ("0" if item is not None else None), info.name


FLOAT_SETTINGS = sorted(float_settings())


def test_every_float_setting_is_checked() -> None:
    keys = {f"{table}.{key}" for table, _, key in FLOAT_SETTINGS}
    assert {"agent.poll_interval_s", "limits.board_power_max_w", "thermal.target_c"} <= keys


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(("table", "index", "key"), FLOAT_SETTINGS)
def test_no_float_setting_takes_nan_or_infinity(
    table: str, index: str | None, key: str, bad: float
) -> None:
    raw: dict[str, Any] = tomllib.loads(default_text())
    raw.setdefault("pool", [{"url": "stratum+tcp://127.0.0.1:3333", "user": "a.b"}])
    section = raw.setdefault(table, {})
    target = section[0] if index is not None else section
    target[key] = bad
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, "nan.toml")
    assert f"{table}" in str(refused.value)
    assert key in str(refused.value)
    assert "finite" in str(refused.value)


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("agent", "poll_interval_s", "nan"),
        ("agent", "stall_timeout_s", "nan"),
        ("limits", "board_power_max_w", "nan"),
        ("thermal", "target_c", "nan"),
        ("thermal", "target_c", "inf"),
    ],
)
def test_nan_in_the_file_is_refused_at_check_and_at_start(
    tmp_path: Path, table: str, key: str, value: str
) -> None:
    path = tmp_path / "nan.toml"
    path.write_text(with_setting(default_text(), table, key, value))
    assert_one_line_refusal(check_config(path), str(path), f"{table}.{key}", "finite")
    agent = start_agent(path, tmp_path)
    _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 78, stderr[-2000:]
    assert "Traceback" not in stderr


# -- bytes that are not a config ------------------------------------------------------------


def test_an_endless_device_is_refused_without_reading_it(tmp_path: Path) -> None:
    assert_one_line_refusal(check_config("/dev/zero"), "/dev/zero", "not a regular file")


def test_a_fifo_without_a_writer_does_not_hang_the_check(tmp_path: Path) -> None:
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    assert_one_line_refusal(check_config(fifo, timeout=20), "not a regular file")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert_one_line_refusal(check_config(tmp_path), "cannot read", "directory")


@pytest.mark.parametrize(
    ("name", "body", "words"),
    [
        ("huge-int", b"[agent]\npoll_interval_s = " + b"9" * 5000 + b"\n", ("not valid TOML",)),
        ("deep-array", b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", ("nested too deeply",)),
        ("binary", bytes(range(256)) * 64, ("not UTF-8",)),
        ("big-file", b"# " + b"x" * (2 << 20) + b"\n", ("larger than",)),
        ("empty", b"", ("fan", "missing")),
    ],
)
def test_bytes_that_cannot_be_a_config_get_one_line(
    tmp_path: Path, name: str, body: bytes, words: tuple[str, ...]
) -> None:
    path = tmp_path / f"{name}.toml"
    path.write_bytes(body)
    assert_one_line_refusal(check_config(path), str(path), *words)


def test_a_huge_value_is_quoted_in_a_few_characters(tmp_path: Path) -> None:
    path = tmp_path / "huge-string.toml"
    path.write_text(with_setting(default_text(), "agent", "name", f'"{"x" * 900_000}"'))
    assert_one_line_refusal(check_config(path), "agent.name")


def test_a_huge_unknown_key_is_quoted_in_a_few_characters(tmp_path: Path) -> None:
    path = tmp_path / "huge-key.toml"
    path.write_text(with_setting(default_text(), "agent", "k" * 500_000, "1"))
    assert_one_line_refusal(check_config(path), "unknown key")


def test_a_5000_digit_integer_in_a_float_key_is_refused(tmp_path: Path) -> None:
    # 4000 digits still parse as TOML; the number rule refuses it (no float holds it).
    path = tmp_path / "wide.toml"
    path.write_text(with_setting(default_text(), "agent", "poll_interval_s", "9" * 4000))
    assert_one_line_refusal(check_config(path), "agent.poll_interval_s", "digits")


# -- what a config must hold ------------------------------------------------------------------


def test_a_real_bus_config_without_fans_or_slots_is_refused(tmp_path: Path) -> None:
    text = real_bus_text()
    without_fans = "\n".join(
        block for block in text.split("\n\n") if not block.lstrip().startswith("[[fan]]")
    )
    path = tmp_path / "nofans.toml"
    path.write_text(without_fans)
    assert_one_line_refusal(check_config(path), "fan: missing", "at least 1")
    without_slots = "\n".join(block for block in text.split("\n\n") if "[[slot]]" not in block)
    path.write_text(without_slots)
    assert_one_line_refusal(check_config(path), "slot", "at least 1")


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("mqtt", "password_file"),
        ("mqtt", "ca_file"),
        ("mqtt", "cert_file"),
        ("mqtt", "key_file"),
        ("pool", "ca_file"),
        ("sim", "scenario"),
    ],
)
def test_a_file_the_config_names_must_exist_at_check_time(
    tmp_path: Path, table: str, key: str
) -> None:
    missing = tmp_path / "no-such-file"
    existing = tmp_path / "present.pem"
    existing.write_text("x\n")
    if table == "pool":
        extra = (
            f'[[pool]]\nurl = "stratum+ssl://127.0.0.1:3443"\nuser = "a.b"\n{key} = "{missing}"\n'
        )
        text = default_text() + "\n" + extra
    elif table == "mqtt":
        pairs = {"password_file": "username", "cert_file": "key_file", "key_file": "cert_file"}
        mate = pairs.get(key)
        mate_line = ""
        if mate == "username":
            mate_line = 'username = "miner"\n'
        elif mate is not None:
            mate_line = f'{mate} = "{existing}"\n'
        text = default_text() + f'\n[mqtt]\ntls = true\n{key} = "{missing}"\n{mate_line}'
    else:
        text = with_setting(default_text(), "sim", key, f'"{missing}"')
    path = tmp_path / "files.toml"
    path.write_text(text)
    assert_one_line_refusal(check_config(path), f"{key}", "cannot read", "no-such-file")


def test_a_missing_scenario_stops_the_start_with_78_not_70(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(with_setting(default_text(), "sim", "scenario", f'"{tmp_path / "gone.toml"}"'))
    agent = start_agent(path, tmp_path)
    _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 78, stderr[-2000:]
    assert "sim.scenario" in stderr


def test_simulated_modules_the_limits_would_refuse_are_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "short.toml"
    path.write_text(with_setting(default_text(), "sim", "chips_per_board", "42"))
    assert_one_line_refusal(check_config(path), "sim.chips_per_domain", "refused")


# -- generated garbage --------------------------------------------------------------------------

_LINES = default_text().splitlines()
_toml_noise = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "[[[", "]]", '"', "'''", "=", "0x", "1e999"]),
    st.text(max_size=30),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(line=st.integers(min_value=0, max_value=len(_LINES) - 1), noise=_toml_noise)
def test_a_damaged_line_is_refused_in_one_line_or_accepted(
    tmp_path: Path, line: int, noise: str
) -> None:
    lines = list(_LINES)
    key, sep, _ = lines[line].partition("=")
    lines[line] = f"{key}= {noise}" if sep else noise
    path = tmp_path / "damaged.toml"
    path.write_text("\n".join(lines) + "\n")
    done = check_config(path)
    if done.returncode == 0:
        assert done.stdout.strip() == f"{path}: ok"
    else:
        assert_one_line_refusal(done, str(path))
