"""Opens the buses named in the config, through the back-end it names; the real one.

Drivers receive what this returns and never learn whether the other end is silicon or
the simulator (`bus_backends`). The clock comes with the buses: real hardware runs on the
monotonic clock, the simulated rig on its own (which may run faster than real time), so
rates and trends are measured in the rig's time.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hashbay.agent.daemon.config import Config
from hashbay.agent.hardware.bus_backends import Buses, load_backend
from hashbay.drivers.errors import DeviceMissingError
from hashbay.drivers.i2c import I2CBus, LockedI2C, open_i2c


class Hardware:
    """The real buses: a gpiozero pin factory by name, an I2C device, the chains' UARTs."""

    def check_config(self, config: Config, /) -> None:
        """Nothing to check beyond the settings' own rules: devices are checked at open."""

    def open(self, config: Config, /) -> Buses:
        """The buses the config names, or one DeviceMissingError naming every device that
        is missing (a first bring-up should learn all of them at once)."""
        missing: list[str] = []
        factory: Any = None
        raw: I2CBus | None = None
        try:
            factory = pin_factory(config.hardware.pin_factory, runtime_dir=config.agent.runtime_dir)
        except DeviceMissingError as exc:
            missing.append(str(exc))
        try:
            raw = open_i2c(config.hardware.i2c_bus)
        except DeviceMissingError as exc:
            missing.append(str(exc))
        uarts = tuple(s.uart for s in config.slot)
        missing += [_uart_missing(path) for path in dict.fromkeys(uarts) if not Path(path).exists()]
        if missing or factory is None or raw is None:
            if raw is not None:
                raw.close()
            if factory is not None:
                _closer(factory)()
            raise DeviceMissingError("; ".join(missing))
        buses = Buses(factory, LockedI2C(raw), uarts)
        buses.resources.callback(raw.close)
        buses.resources.callback(_closer(factory))  # closes first
        return buses


HARDWARE = Hardware()


def open_buses(config: Config) -> Buses:
    """The buses of the back-end the config names (`sim` or the real hardware)."""
    return load_backend(config.bus_backend).open(config)


def _uart_missing(path: str) -> str:
    return (
        f"serial port {path} does not exist; enable that UART (on a Raspberry Pi "
        "dtoverlay=uartN in config.txt) or fix the slot's uart setting"
    )


def _closer(factory: Any) -> Callable[[], None]:
    close = getattr(factory, "close", None)
    return close if callable(close) else (lambda: None)


@dataclass(frozen=True)
class PinBackend:
    """A real gpiozero pin factory, by the name the config uses for it."""

    module: str
    factory: str
    install: str  # what gives a board this back-end
    workdir_env: str = ""  # where the library wants a writable working directory


PIN_BACKENDS = {
    "lgpio": PinBackend(
        "gpiozero.pins.lgpio",
        "LGPIOFactory",
        "python3-lgpio on Raspberry Pi OS (sudo apt install python3-lgpio), or the "
        "hashbay[pi] extra (lgpio from PyPI) elsewhere",
        # lgpio makes its notification FIFOs (.lgd-nfy*) in the working directory, and
        # changes into LG_WD if set: under systemd the working directory is a read-only /.
        workdir_env="LG_WD",
    ),
    "rpigpio": PinBackend(
        "gpiozero.pins.rpigpio",
        "RPiGPIOFactory",
        "python3-rpi-lgpio on Raspberry Pi OS (sudo apt install python3-rpi-lgpio), or "
        "RPi.GPIO from PyPI on older systems",
    ),
}


def pin_factory(name: str, *, runtime_dir: str) -> Any:
    """The named real pin factory, or DeviceMissingError saying what to install or check.
    A library that writes files where it runs is pointed at the runtime directory."""
    backend = PIN_BACKENDS.get(name)
    if backend is None:
        raise DeviceMissingError(
            f"pin factory {name!r} is not a real GPIO back-end (known: {', '.join(PIN_BACKENDS)}; "
            "'sim' needs every bus simulated)"
        )
    if backend.workdir_env:
        os.environ.setdefault(backend.workdir_env, runtime_dir)
    try:
        module = importlib.import_module(backend.module)
        return getattr(module, backend.factory)()
    except ImportError as exc:
        raise DeviceMissingError(
            f"GPIO pin factory {name!r} unavailable: {exc}; install {backend.install}"
        ) from exc
    except Exception as exc:  # each library fails its own way (lgpio.error, PinUnknownPi, …)
        raise DeviceMissingError(
            f"GPIO pin factory {name!r} cannot open the GPIO chip ({exc}); check that "
            "/dev/gpiochip* exists, that the user is in the gpio group, and that this is "
            "a Raspberry Pi (gpiozero reads the board revision)"
        ) from exc
