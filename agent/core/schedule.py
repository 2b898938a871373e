"""Daily time windows in local time (`22:00-07:00`), for tariffs and scheduled curtailment.

A window may cross midnight; start == end means all day. Config validation already
checked the shape with a pattern; this checks the numbers and says which one is wrong.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from hashbay.drivers.errors import ConfigError

MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class TimeWindow:
    start_min: int  # minute of the day, 0..1439
    end_min: int

    def contains(self, minute_of_day: int) -> bool:
        if self.start_min == self.end_min:
            return True
        if self.start_min < self.end_min:
            return self.start_min <= minute_of_day < self.end_min
        return minute_of_day >= self.start_min or minute_of_day < self.end_min


def _minute(text: str, whole: str) -> int:
    hours, _, minutes = text.partition(":")
    if not (hours.isdigit() and minutes.isdigit()):
        raise ConfigError(f"time window {whole!r}: {text!r} is not HH:MM")
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        raise ConfigError(f"time window {whole!r}: {text!r} is not a time of day")
    return h * 60 + m


def parse_window(text: str) -> TimeWindow:
    start, sep, end = text.partition("-")
    if not sep:
        raise ConfigError(f"time window {text!r} must look like 22:00-07:00")
    return TimeWindow(_minute(start.strip(), text), _minute(end.strip(), text))


def parse_priced_window(text: str) -> tuple[TimeWindow, float]:
    window, sep, price = text.partition("=")
    if not sep:
        raise ConfigError(f"tariff {text!r} must look like 17:00-21:00=0.32")
    try:
        value = float(price)
    except ValueError:
        raise ConfigError(f"tariff {text!r}: {price!r} is not a price") from None
    if not 0 <= value <= 100:
        raise ConfigError(f"tariff {text!r}: price must be from 0 to 100 per kWh")
    return parse_window(window), value


def minute_of_day(now: datetime.datetime | None = None) -> int:
    """The local wall clock's minute of the day (schedules follow the site's clock)."""
    moment = now or datetime.datetime.now().astimezone()
    return moment.hour * 60 + moment.minute
