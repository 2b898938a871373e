"""The real back-ends, as far as a machine without the controller's hardware allows:
smbus2 on a bus that does not exist, gpiozero's real pin factories chosen by name, and
the agent (and its self-test) started on the real board's config, which must end in
exit 69 with one line naming every missing device and what to do about each.
(The real serial path runs over ptys in every rig test.)"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
import smbus2

from hashbay.agent.buses import PIN_BACKENDS, pin_factory
from hashbay.drivers.errors import DeviceMissingError
from hashbay.drivers.i2c import open_i2c
from tests.support import AGENT

BOARD_CONFIG = Path(__file__).resolve().parent.parent / "systemd" / "hashbay.toml"
BOARD_DEVICES = ("/dev/i2c-1", "/dev/gpiochip0", "/dev/ttyAMA0", "/dev/ttyAMA3", "/dev/ttyAMA4")
no_controller = pytest.mark.skipif(
    any(Path(d).exists() for d in BOARD_DEVICES), reason="this machine has controller hardware"
)


def test_smbus2_on_a_missing_bus_raises_what_open_i2c_turns_into_advice() -> None:
    with pytest.raises(FileNotFoundError) as raw:
        smbus2.SMBus("/dev/i2c-97")
    assert raw.value.errno == errno.ENOENT
    with pytest.raises(DeviceMissingError) as missing:
        open_i2c("/dev/i2c-97")
    message = str(missing.value)
    assert message.startswith("I2C bus /dev/i2c-97 cannot be opened (No such file or directory)")
    assert "dtparam=i2c_arm=on" in message and "i2c group" in message
    assert isinstance(missing.value.__cause__, FileNotFoundError)


@no_controller
def test_the_lgpio_factory_without_a_gpio_chip_is_device_missing_naming_what_to_check() -> None:
    pytest.importorskip("lgpio", reason="the dev extra installs lgpio")
    with pytest.raises(DeviceMissingError) as missing:
        pin_factory("lgpio")
    message = str(missing.value)
    assert message.startswith("GPIO pin factory 'lgpio' cannot open the GPIO chip (")
    assert "/dev/gpiochip*" in message and "gpio group" in message


@pytest.mark.parametrize(
    ("name", "module"), [("lgpio", "lgpio"), ("rpigpio", "RPi")], ids=["lgpio", "rpigpio"]
)
def test_a_pin_factory_whose_library_is_missing_names_the_package_to_install(
    name: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = PIN_BACKENDS[name]
    monkeypatch.delitem(sys.modules, backend.module, raising=False)
    monkeypatch.setitem(sys.modules, module, None)  # import of it fails, as when absent
    with pytest.raises(DeviceMissingError) as missing:
        pin_factory(name)
    message = str(missing.value)
    assert message.startswith(f"GPIO pin factory {name!r} unavailable: ")
    assert "sudo apt install python3-" in message
    assert isinstance(missing.value.__cause__, ImportError)


def test_an_unknown_pin_factory_name_lists_the_real_ones() -> None:
    with pytest.raises(DeviceMissingError, match="known: lgpio, rpigpio"):
        pin_factory("sim")


@no_controller
@pytest.mark.parametrize("extra", [[], ["--self-test"]], ids=["daemon", "self-test"])
def test_the_board_config_here_exits_69_naming_every_missing_device(
    tmp_path: Path, extra: list[str]
) -> None:
    done = subprocess.run(
        [
            *AGENT,
            "--config",
            str(BOARD_CONFIG),
            "--state-dir",
            str(tmp_path / "state"),
            "--runtime-dir",
            str(tmp_path / "run"),
            "--log-format",
            "json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 69, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("hashbay-agent: GPIO pin factory 'lgpio' ")
    for what in (
        "I2C bus /dev/i2c-1 cannot be opened",
        "serial port /dev/ttyAMA0 does not exist",
        "serial port /dev/ttyAMA3 does not exist",
        "serial port /dev/ttyAMA4 does not exist",
    ):
        assert what in last
