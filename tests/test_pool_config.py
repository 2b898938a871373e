"""`[[pool]]` and `[stratum]` in the config: what is accepted, what is refused and why,
and the agent's choice between pool work and local work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hashbay.agent.daemon.config import load_config
from hashbay.agent.mining.pool_settings import Endpoint, parse_url
from hashbay.drivers.errors import ConfigError

from .support import write_config


def check(tmp_path: Path, extra: str) -> str:
    """The config error for the simulated rig's config plus `extra`; "" when it is fine."""
    try:
        load_config(write_config(tmp_path / "agent.toml", extra))
    except ConfigError as exc:
        return str(exc)
    return ""


def test_a_prioritised_pool_list_is_accepted(tmp_path: Path) -> None:
    error = check(
        tmp_path,
        '[[pool]]\nurl = "stratum+tcp://pool.example.com:3333"\nuser = "acct.rig1"\n'
        '[[pool]]\nurl = "stratum+ssl://backup.example.com:443"\nuser = "acct.rig1"\n'
        'password = "d=65536"\n'
        "[stratum]\nfailback_delay_s = 120\n",
    )
    assert error == ""


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ('url = "stratum+tcp://pool.example.com"', "pool[0].url: needs a port"),
        ('url = "stratum+tcp://pool.example.com:99999"', "pool[0].url: port must be a number"),
        ('url = "http://pool.example.com:3333"', "pool[0].url: must be a string matching"),
        ('url = "stratum+tcp://:3333"', "pool[0].url: has no host"),
        (
            'url = "stratum+tcp://pool.example.com:3333"\nca_file = "/etc/passwd"',
            "pool[0].ca_file: only used with stratum+ssl",
        ),
        ('url = "stratum+tcp://p.example:1"\nuser = "has space"', "pool[0].user: must be"),
    ],
)
def test_a_bad_pool_entry_is_a_config_error_naming_the_key(
    tmp_path: Path, pool: str, message: str
) -> None:
    entry = pool if "user" in pool else pool + '\nuser = "acct.rig1"'
    assert message in check(tmp_path, f"[[pool]]\n{entry}\n")


def test_the_same_pool_twice_and_a_backoff_upside_down_are_refused(tmp_path: Path) -> None:
    twice = '[[pool]]\nurl = "stratum+tcp://p.example:3333"\nuser = "a.b"\n' * 2
    assert "pool[1]: same url and user as pool[0]" in check(tmp_path, twice)
    upside_down = check(tmp_path, "[stratum]\nbackoff_min_s = 10\nbackoff_max_s = 5\n")
    assert "stratum.backoff_min_s: must not exceed stratum.backoff_max_s" in upside_down


def test_urls_parse_to_host_port_and_tls() -> None:
    assert parse_url("stratum+tcp://pool.example.com:3333") == Endpoint(
        "pool.example.com", 3333, tls=False
    )
    assert parse_url("stratum+ssl://[2001:db8::1]:443") == Endpoint("2001:db8::1", 443, tls=True)
    assert parse_url("stratum+tls://10.0.0.1:3334").tls
    with pytest.raises(ValueError, match="scheme://host:port only"):
        parse_url("stratum+tcp://user:pw@pool.example.com:3333")


def test_the_test_pool_command_prints_its_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "pool.url"
    pool = subprocess.Popen(
        [sys.executable, "-m", "hashbay.tools.pool", "--ready-file", str(ready)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert pool.stdout is not None
        first = pool.stdout.readline()
        assert first.startswith("listening on stratum+tcp://127.0.0.1:")
        assert ready.read_text().strip() == first.split()[-1]
        assert parse_url(first.split()[-1]).port > 0
    finally:
        pool.terminate()
        assert pool.wait(10) == 0
