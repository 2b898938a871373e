"""The real back-ends, as far as a machine without the controller's hardware allows:
smbus2 on a bus that does not exist, gpiozero's real pin factories chosen by name, and
the agent (and its self-test) started on the real board's config, which must end in
exit 69 with one line naming every missing device and what to do about each.
(The real serial path runs over ptys in every rig test.)"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import smbus2

from hashbay.agent.hardware.buses import PIN_BACKENDS, pin_factory
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
def test_the_lgpio_factory_without_a_gpio_chip_is_device_missing_naming_what_to_check(
    tmp_path: Path,
) -> None:
    """In a process of its own: importing lgpio changes into its working directory."""
    here, runtime = tmp_path / "cwd", tmp_path / "run"
    here.mkdir()
    runtime.mkdir()
    code = (
        "from hashbay.agent.hardware.buses import pin_factory\n"
        "from hashbay.drivers.errors import DeviceMissingError\n"
        "try:\n"
        f"    pin_factory('lgpio', runtime_dir={str(runtime)!r})\n"
        "except DeviceMissingError as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LG_WD"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True, check=True
    )
    message = done.stdout.strip()
    assert message.startswith("GPIO pin factory 'lgpio' cannot open the GPIO chip (")
    assert "/dev/gpiochip*" in message and "gpio group" in message
    assert list(here.iterdir()) == []  # lgpio's FIFO went to the runtime directory
    assert [p.name for p in runtime.iterdir()] == [".lgd-nfy0"]


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
        pin_factory(name, runtime_dir="/nonexistent")
    message = str(missing.value)
    assert message.startswith(f"GPIO pin factory {name!r} unavailable: ")
    assert "sudo apt install python3-" in message
    assert isinstance(missing.value.__cause__, ImportError)


def test_an_unknown_pin_factory_name_lists_the_real_ones() -> None:
    with pytest.raises(DeviceMissingError, match="known: lgpio, rpigpio"):
        pin_factory("sim", runtime_dir="/nonexistent")


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
        cwd=tmp_path,
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
    # nothing left where it ran (lgpio's FIFO goes to the runtime directory)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["run"] if extra else ["run", "state"])
