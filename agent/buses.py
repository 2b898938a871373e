"""Opens the buses named in the config. The only place that maps `sim` to the simulated rig.

Drivers receive what this returns and never learn whether the other end is silicon or
the simulator, the way python-can picks an interface by name. The clock comes with the
buses: real hardware runs on the monotonic clock, the simulated rig on its own (which
may run faster than real time), so rates and trends are measured in the rig's time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from hashbay.agent.config import SIM, Config
from hashbay.drivers.errors import DeviceMissingError
from hashbay.drivers.i2c import I2CBus, LockedI2C, open_i2c

log = structlog.get_logger("hashbay.buses")


@dataclass
class Buses:
    pin_factory: Any
    i2c: LockedI2C
    uart_paths: list[str]
    clock: Callable[[], float] = time.monotonic
    sim: Any = None  # the SimRig when simulated, for status and fault injection only
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # noqa: S112 - closing must try every bus
                continue


def open_buses(config: Config) -> Buses:
    if config.simulated:
        return _simulated(config)
    factory = _pin_factory(config.hardware.pin_factory)
    raw: I2CBus = open_i2c(config.hardware.i2c_bus)
    buses = Buses(factory, LockedI2C(raw), [s.uart for s in config.slot])
    buses._closers += [raw.close, _closer(factory)]
    return buses


def _simulated(config: Config) -> Buses:
    from hashbay.tools.sim.control import SOCKET_NAME, ControlServer
    from hashbay.tools.sim.rig import SimRig

    rig = SimRig(config)
    rig.start()
    buses = Buses(rig.pin_factory, LockedI2C(rig.i2c), rig.uart_paths, rig.now, rig)
    buses._closers.append(rig.stop)
    if config.sim.control_socket:
        path = Path(config.agent.runtime_dir) / SOCKET_NAME
        try:
            control = ControlServer(rig, path)
        except OSError as exc:
            log.warning("simulator control socket unavailable", path=str(path), error=str(exc))
        else:
            buses._closers.append(control.close)
    return buses


def _closer(factory: Any) -> Callable[[], None]:
    close = getattr(factory, "close", None)
    return close if callable(close) else (lambda: None)


def _pin_factory(name: str) -> Any:
    if name == SIM:
        raise DeviceMissingError("pin factory 'sim' needs the simulated rig (all buses 'sim')")
    try:
        if name == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    except (ImportError, OSError, RuntimeError) as exc:
        raise DeviceMissingError(
            f"GPIO pin factory '{name}' unavailable ({exc}); install its Python module "
            f"(python3-lgpio / python3-rpi-lgpio) and check /dev/gpiochip*"
        ) from exc
