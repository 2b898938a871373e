"""Settings of per-board protection (`protection`): temperatures, sensors, faults.

Declared apart from the service so the config assembles it without importing the
service (`config` imports settings, never services)."""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.core.settings import setting
from hashbay.drivers.errors import ConfigError

ALERT_FAULT_QUEUES = (1, 2, 4, 6)


@dataclass(frozen=True, kw_only=True)
class ProtectionSettings:
    check_interval_s: float = setting(
        0.02,
        "Period of the fast path: each powered board's sensors are read this often, so a "
        "board crossing cutoff_c is cut within about two periods.",
        unit="s",
        min=0.005,
        max=1,
    )
    warn_c: float = setting(
        80.0,
        "Hottest board sensor at which a warning is raised.",
        unit="°C",
        min=30,
        max=150,
    )
    throttle_c: float = setting(
        85.0,
        "At or above this the board's clock is stepped down (and the fans forced to full "
        "speed, whatever quiet mode or an override say).",
        unit="°C",
        min=30,
        max=150,
    )
    cutoff_c: float = setting(
        92.0,
        "At or above this the board's power is cut at once (the health model faults at "
        "health.temp_fault_c; this acts first, and the board comes back by itself).",
        unit="°C",
        min=30,
        max=150,
    )
    hysteresis_c: float = setting(
        5.0,
        "A threshold crossed upwards is undone only this far below it.",
        unit="°C",
        min=0.5,
        max=30,
    )
    throttle_step: float = setting(
        0.1, "Share of the full clock each throttle step takes or gives back.", min=0.01, max=0.5
    )
    throttle_min_scale: float = setting(
        0.5, "Lowest clock scale throttling goes to; hotter still means a cut.", min=0.1, max=1
    )
    throttle_interval_s: float = setting(
        10.0,
        "Time between throttle steps: long enough to see the previous step work (the board's "
        "thermal time constant is 45-100 s), short enough to act before the cutoff.",
        unit="s",
        min=0.5,
        max=600,
    )
    stall_scale: float = setting(
        0.7,
        "Clock scale while a fan is stalled (the boards lose a share of their airflow).",
        min=0.1,
        max=1,
    )
    sensor_unreadable_reads: int = setting(
        10,
        "A temperature sensor counts as unreadable only after this many failed reads in a "
        "row (and sensor_unreadable_s): on a noisy bus single reads fail, and a loop that "
        "stalled between two reads has not watched the sensor fail for that long.",
        min=1,
        max=10000,
    )
    sensor_unreadable_s: float = setting(
        0.5,
        "A sensor failing its reads this long (and sensor_unreadable_reads times) is "
        "unreadable: a `sensor_unreadable` event, never an overheat warning.",
        unit="s",
        min=0,
        max=600,
    )
    sensor_lost_s: float = setting(
        5.0,
        "A temperature sensor unreadable for this long (and at least "
        "sensor_unreadable_reads reads) makes the board unwatchable: its power is cut.",
        unit="s",
        min=0,
        max=600,
    )
    sensor_stuck_s: float = setting(
        60.0,
        "A reading unchanged to the last bit for this long after the board's power moved "
        "by stuck_power_change_w is a stuck sensor: the board's power is cut.",
        unit="s",
        min=1,
        max=3600,
    )
    stuck_power_change_w: float = setting(
        100.0,
        "Power change that must move a live sensor: 100 W moves a board several °C.",
        unit="W",
        min=10,
        max=5000,
    )
    max_restarts: int = setting(
        3,
        "Automatic restarts after a cut within restart_window_s; one more trip and the "
        "board stays off until serviced.",
        min=0,
        max=100,
    )
    restart_window_s: float = setting(
        3600.0, "Window in which restarts are counted.", unit="s", min=60, max=7 * 86400
    )
    restart_min_off_s: float = setting(
        30.0,
        "A cut board stays off at least this long, even if its sensors cool faster.",
        unit="s",
        min=0,
        max=3600,
    )

    alert_fault_queue: int = setting(
        1,
        "Conversions in a row at or above cutoff_c before a sensor's comparator (its OS/ALERT "
        "output, on a slot's alert_pin) cuts the board: 1, 2, 4 or 6. More rides out noise; "
        "each adds a conversion time (27-220 ms on a TMP75) to the cut.",
        min=1,
        max=6,
    )
    backup_interval_s: float = setting(
        0.5,
        "Period of the software sweep while every powered board has its sensors' comparator "
        "armed on an alert pin: the hardware cuts, the sweep backs it up and runs the warn "
        "and throttle tiers (without alert pins the sweep runs at check_interval_s).",
        unit="s",
        min=0.02,
        max=5,
    )

    def __post_init__(self) -> None:
        if not self.warn_c < self.throttle_c < self.cutoff_c:
            raise ConfigError(
                f"protection: warn_c {self.warn_c} < throttle_c {self.throttle_c} < cutoff_c "
                f"{self.cutoff_c} must hold, so the board is warned, then throttled, then cut"
            )
        if self.alert_fault_queue not in ALERT_FAULT_QUEUES:
            raise ConfigError(
                f"protection.alert_fault_queue: must be one of 1, 2, 4, 6 (what the sensors "
                f"count), got {self.alert_fault_queue}"
            )

    @property
    def cool_c(self) -> float:
        """Below this a throttled board steps back up and a cut one may restart."""
        return self.throttle_c - self.hysteresis_c
