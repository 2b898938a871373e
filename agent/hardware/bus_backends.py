"""What a bus back-end hands out, and the back-ends by name.

A back-end opens every bus the config names (pins, I2C, the chains' UARTs, a clock) and
checks the parts of the config only it understands. The agent picks one by name, the way
python-can picks an interface: the name maps to a `module:attribute` string imported
only when chosen, so the agent never imports the simulator (it is just another back-end,
`sim`), and a third party may add one under the `hashbay.bus_backends` entry point group.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, TypeVar

from hashbay.drivers.bm13xx.chain import SerialLink, open_serial
from hashbay.drivers.errors import ConfigError
from hashbay.drivers.i2c import LockedI2C

ENTRY_POINT_GROUP = "hashbay.bus_backends"
BUILTIN = {
    "hardware": "hashbay.agent.hardware.buses:HARDWARE",
    "sim": "hashbay.tools.sim.backend:SIM",
}

C_contra = TypeVar("C_contra", contravariant=True)


@dataclass
class Buses:
    """Every bus the drivers use. `close` closes what the back-end opened, newest first."""

    pin_factory: Any
    i2c: LockedI2C
    uart_paths: tuple[str, ...]
    clock: Callable[[], float] = time.monotonic
    sim: Any = None  # the SimRig when simulated, for status and fault injection only
    resources: ExitStack = field(default_factory=ExitStack)

    def open_uart(self, slot: int) -> SerialLink:
        """Slot's chain UART, opened; DeviceMissingError naming the device if it cannot be."""
        return open_serial(self.uart_paths[slot])

    def close(self) -> None:
        """Close every bus; one that fails to close does not keep the others open."""
        with suppress(Exception):  # ExitStack runs every callback before it re-raises
            self.resources.close()


class BusBackend(Protocol[C_contra]):
    def check_config(self, config: C_contra, /) -> None:
        """Raise ConfigError for settings this back-end cannot run."""

    def open(self, config: C_contra, /) -> Buses:
        """Every bus the config names, or DeviceMissingError naming what is missing."""


def load_backend(name: str) -> BusBackend[Any]:
    """The back-end registered under `name` (ConfigError if none is)."""
    target = BUILTIN.get(name)
    if target is None:
        found = entry_points(group=ENTRY_POINT_GROUP, name=name)
        target = next((ep.value for ep in found), None)
    if target is None:
        raise ConfigError(f"no bus back-end named {name!r} (known: {', '.join(BUILTIN)})")
    module, _, attribute = target.partition(":")
    backend: BusBackend[Any] = getattr(importlib.import_module(module), attribute)
    return backend
