"""What a value from outside may be, each rule with its own words for the error message.

Commands check their arguments with these, and the operator controls read back from disk
check their values with the same ones, so a value means the same wherever it comes from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from hashbay.drivers.numbers import finite_in


class Arg(Protocol):
    """One value's rule: what it accepts, in words for the error message."""

    def describe(self, slots: int) -> str: ...

    def accepts(self, value: Any, slots: int) -> bool: ...


@dataclass(frozen=True)
class Slot:
    def describe(self, slots: int) -> str:
        return f"an integer slot number from 0 to {slots - 1}"

    def accepts(self, value: Any, slots: int) -> bool:
        return type(value) is int and 0 <= value < slots  # bool is an int: excluded


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]

    def describe(self, slots: int) -> str:
        return "one of " + ", ".join(json.dumps(v) for v in self.values)

    def accepts(self, value: Any, slots: int) -> bool:
        return isinstance(value, str) and value in self.values


@dataclass(frozen=True)
class Number:
    min: float
    max: float
    unit: str = ""

    def describe(self, slots: int) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"a number from {self.min:g} to {self.max:g}{unit}"

    def accepts(self, value: Any, slots: int) -> bool:
        return finite_in(value, self.min, self.max) is not None


@dataclass(frozen=True)
class Flag:
    def describe(self, slots: int) -> str:
        return "true or false"

    def accepts(self, value: Any, slots: int) -> bool:
        return isinstance(value, bool)


SLOT = Slot()
POWER_TARGET_W = Number(min=100, max=100_000, unit="W")
FAN_DUTY = Number(min=0, max=1)
QUIET_MODE = Choice(("on", "off", "schedule"))
CURTAIL_MODE = Choice(("sleep", "min"))
LOCATE_MODE = Choice(("on", "off", "blink"))
ELECTRICITY_PRICE = Number(min=0, max=100, unit="per kWh")
HASHPRICE = Number(min=0, max=100, unit="per TH/s per day")
FLAG = Flag()
