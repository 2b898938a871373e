"""Opens the buses named in the config. The only place that maps `sim` to the simulated rig.

Drivers receive what this returns and never learn whether the other end is silicon or
the simulator, the way python-can picks an interface by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hashbay.agent.config import SIM, Config
from hashbay.drivers.errors import DeviceMissingError


@dataclass
class Buses:
    pin_factory: Any

    def close(self) -> None:
        close = getattr(self.pin_factory, "close", None)
        if close is not None:
            close()


def open_buses(config: Config) -> Buses:
    return Buses(pin_factory=_pin_factory(config.hardware.pin_factory))


def _pin_factory(name: str) -> Any:
    if name == SIM:
        from hashbay.tools.sim.pins import sim_pin_factory

        return sim_pin_factory()
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
