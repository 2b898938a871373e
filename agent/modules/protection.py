"""Per-board protection: what a board's temperatures, power and rails say it must do now.

Pure logic — no I/O, no clock of its own — so it can run on the fastest path the agent
has (a temperature check every few tens of milliseconds) and be tested exhaustively.

Tiers, mildest first: WARN (hot, nothing to do yet), THROTTLE (clock scaled down in
steps), then the three that cut the board's power: CUT (over the cutoff temperature),
SENSOR_FAULT (a sensor unreadable or stuck: the board cannot be watched) and POWER_FAULT
(the DC-DC converter or hot-swap controller latched a fault). Those three latch until
the board is restarted.

Hysteresis everywhere a threshold is crossed both ways: the clock steps down every
`throttle_interval_s` while the board is at or above `throttle_c` and steps back up only
below `throttle_c - hysteresis_c`; in between it holds. A warning clears only below
`warn_c - hysteresis_c`. A noisy reading at a threshold therefore cannot make the clock
chatter.

A sensor that fails its reads is bus noise until it has failed `sensor_unreadable_reads`
reads in a row for `sensor_unreadable_s`; then it is reported in `Verdict.unreadable` (its
own alarm, never an overheat warning: a board whose sensors do not read this time keeps
its tier), and after `sensor_lost_s` the board is cut. Counting reads as well as time
means neither a noisy bus nor a loop that stalled between two reads fakes a lost sensor.

A stalled fan caps the clock at `stall_scale` at once (the other fans go to full speed,
fan_control.py), and lifts it when the fan turns again.

Coming back by itself: after a cut, the board may be powered again once it has been off
`restart_min_off_s` and has cooled — every sensor readable and below
`throttle_c - hysteresis_c`, so it restarts below the throttle band, not straight into
it (and necessarily well below the cutoff) — at most `max_restarts` times within
`restart_window_s`; after that it stays off and asks for service.

Intended call pattern (one guard and one policy per module, new ones for a new module):

    guard, policy = BoardGuard(settings), RestartPolicy(settings)
    # while the board is powered, on every temperature read (fast path):
    verdict = guard.assess(now_s, temps_c, power_w, fans_stalled, rail_fault)
    if verdict.changed:
        apply verdict.freq_scale to the chain's clock; publish verdict.tier / .reason
    if verdict.tier.cuts_power:
        power the board off; policy.tripped(now_s, verdict.reason); publish an event
    # while it is off after a trip, every second or so:
    if policy.cooled(temps_c) and policy.may_restart(now_s):
        policy.record_restart(now_s); guard.reset(); power the board up again
    elif policy.exhausted:
        stay off; publish policy.reason ("3 restarts in 1 h: needs service")
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from hashbay.agent.modules.protection_settings import ProtectionSettings
from hashbay.agent.modules.sensor_track import PowerWatts, SensorTrack


class Tier(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    THROTTLE = "throttle"
    CUT = "cut"
    SENSOR_FAULT = "sensor_fault"
    POWER_FAULT = "power_fault"

    @property
    def cuts_power(self) -> bool:
        return self in _CUTTING


_CUTTING = frozenset({Tier.CUT, Tier.SENSOR_FAULT, Tier.POWER_FAULT})


@dataclass(frozen=True)
class Verdict:
    tier: Tier
    freq_scale: float  # share of the board's full clock it may run at (0 when cut)
    reason: str
    changed: bool  # tier or freq_scale differ from the previous verdict
    hottest_c: float | None = None
    unreadable: tuple[int, ...] = ()  # sensors past the unreadable debounce (their own alarm)


class BoardGuard:
    """Protection of one board; `assess` on every temperature read while it is powered."""

    def __init__(self, settings: ProtectionSettings) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """Forget everything: the board was (re)started."""
        self._sensors: list[SensorTrack] = []
        self._started_s: float | None = None
        self._scale = 1.0
        self._last_step_s = -math.inf
        self._warned = False
        self._latched: Verdict | None = None
        self._last: tuple[Tier, float] | None = None
        self._unreadable: tuple[int, ...] = ()

    @property
    def freq_scale(self) -> float:
        return 0.0 if self._latched is not None else self._scale

    def assess(
        self,
        now_s: float,
        temps_c: Sequence[float | None],
        power_w: float | None = None,
        fans_stalled: int = 0,
        rail_fault: str | None = None,
    ) -> Verdict:
        """`temps_c`: one reading per sensor (None = unreadable); `power_w`: the board's
        power if known; `rail_fault`: a latched DC-DC / hot-swap fault in words, or None."""
        if self._latched is not None:
            return self._verdict(
                self._latched.tier, 0.0, self._latched.reason, self._latched.hottest_c
            )
        if rail_fault:
            return self._latch(Tier.POWER_FAULT, f"power fault: {rail_fault}", None)
        s = self.settings
        if self._started_s is None:
            self._started_s = now_s
        hottest_c, fault, unreadable = self._watch_sensors(now_s, temps_c, power_w)
        self._unreadable = unreadable
        if fault:
            return self._latch(Tier.SENSOR_FAULT, fault, hottest_c)
        if hottest_c is not None and hottest_c >= s.cutoff_c:
            return self._latch(
                Tier.CUT,
                f"board at {hottest_c:.1f} °C reached the {s.cutoff_c:g} °C cutoff: power cut",
                hottest_c,
            )
        if hottest_c is not None:
            self._step_throttle(now_s, hottest_c)
            self._warned = hottest_c >= s.warn_c or (
                self._warned and hottest_c >= s.warn_c - s.hysteresis_c
            )
        return self._graded(hottest_c, fans_stalled)

    def _watch_sensors(
        self, now_s: float, temps_c: Sequence[float | None], power_w: float | None
    ) -> tuple[float | None, str, tuple[int, ...]]:
        """The hottest usable reading, why the sensors can no longer be trusted (or ""),
        and which sensors are past the unreadable debounce."""
        s = self.settings
        while len(self._sensors) < len(temps_c):
            self._sensors.append(SensorTrack(now_s))
        hottest_c: float | None = None
        unreadable: list[int] = []
        for index, (sensor, raw) in enumerate(zip(self._sensors, temps_c, strict=False)):
            # A value that is not a temperature is as good as unreadable.
            reading = raw if raw is not None and math.isfinite(raw) else None
            sensor.see(reading, now_s, power_w, PowerWatts(s.stuck_power_change_w))
            lost_since = sensor.unreadable_since_s
            if lost_since is not None:
                lost_s = now_s - lost_since
                if sensor.failed_reads < s.sensor_unreadable_reads:
                    continue  # bus noise until it repeats
                if lost_s >= s.sensor_lost_s:
                    return (
                        hottest_c,
                        f"temperature sensor {index} unreadable for {_duration(lost_s)}"
                        ": the board cannot be watched, power cut",
                        (*unreadable, index),
                    )
                if lost_s >= s.sensor_unreadable_s:
                    unreadable.append(index)
                continue
            moved_s = sensor.power_moved_s
            if moved_s is not None and now_s - moved_s >= s.sensor_stuck_s:
                return (
                    hottest_c,
                    f"temperature sensor {index} stuck at {sensor.value_c:.2f} °C for "
                    f"{_duration(now_s - sensor.since_s)} while the board's power moved: "
                    "power cut",
                    tuple(unreadable),
                )
            if reading is not None and (hottest_c is None or reading > hottest_c):
                hottest_c = reading
        if not temps_c:
            started = self._started_s if self._started_s is not None else now_s
            if now_s - started >= s.sensor_lost_s:
                return None, "no temperature sensor reported: the board cannot be watched", ()
        return hottest_c, "", tuple(unreadable)

    def _step_throttle(self, now_s: float, hottest_c: float) -> None:
        s = self.settings
        if now_s - self._last_step_s < s.throttle_interval_s:
            return
        if hottest_c >= s.throttle_c and self._scale > s.throttle_min_scale:
            self._scale = max(s.throttle_min_scale, round(self._scale - s.throttle_step, 6))
            self._last_step_s = now_s
        elif hottest_c < s.cool_c and self._scale < 1.0:
            self._scale = min(1.0, round(self._scale + s.throttle_step, 6))
            self._last_step_s = now_s

    def _graded(self, hottest_c: float | None, fans_stalled: int) -> Verdict:
        s = self.settings
        scale = self._scale
        hot = "" if hottest_c is None else f"board at {hottest_c:.1f} °C"
        if fans_stalled > 0 and s.stall_scale < scale:
            plural = "s" if fans_stalled > 1 else ""
            return self._verdict(
                Tier.THROTTLE,
                s.stall_scale,
                f"{fans_stalled} fan{plural} stalled: clock at {s.stall_scale:.0%}",
                hottest_c,
            )
        if scale < 1.0:
            why = (
                f"{hot}, throttling at {s.throttle_c:g} °C"
                if hottest_c is not None and hottest_c >= s.throttle_c
                else f"{hot}; clock steps back up below {s.cool_c:g} °C"
                if hottest_c is not None
                else "clock held while the sensors do not read"
            )
            return self._verdict(Tier.THROTTLE, scale, f"{why}: clock at {scale:.0%}", hottest_c)
        if hottest_c is None:
            # Nothing read this time: not a temperature, so no tier changes on it (an
            # unreadable sensor is its own alarm, and a cut once it lasts).
            return self._verdict(
                Tier.WARN if self._warned else Tier.OK,
                scale,
                "no sensor read this time: tier held",
                hottest_c,
            )
        if self._warned:
            return self._verdict(
                Tier.WARN, scale, f"{hot}, warning from {s.warn_c:g} °C", hottest_c
            )
        return self._verdict(Tier.OK, scale, hot, hottest_c)

    def _latch(self, tier: Tier, reason: str, hottest_c: float | None) -> Verdict:
        verdict = self._verdict(tier, 0.0, reason, hottest_c)
        self._latched = verdict
        return verdict

    def _verdict(self, tier: Tier, scale: float, reason: str, hottest_c: float | None) -> Verdict:
        now = (tier, scale)
        changed = now != self._last
        self._last = now
        return Verdict(tier, scale, reason, changed, hottest_c, self._unreadable)


class RestartPolicy:
    """Whether a board cut by protection may be powered again, and when to give up."""

    def __init__(self, settings: ProtectionSettings) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """A technician cleared the slot (or a new module arrived): count from zero."""
        self._restarts: deque[float] = deque()
        self._off_since_s: float | None = None
        self.exhausted = False
        self.reason = ""
        self.last_trip = ""

    @property
    def restarts(self) -> int:
        return len(self._restarts)

    def tripped(self, now_s: float, reason: str = "") -> None:
        """The board's power was cut (by protection) at `now_s`."""
        self._off_since_s = now_s
        self.last_trip = reason

    def cooled(self, temps_c: Sequence[float | None]) -> bool:
        """Every sensor reads, and all below `throttle_c - hysteresis_c`."""
        cool_c = self.settings.cool_c
        return bool(temps_c) and all(
            t is not None and math.isfinite(t) and t < cool_c for t in temps_c
        )

    def may_restart(self, now_s: float) -> bool:
        """Off long enough and within the restart limit; latches `exhausted` when not."""
        s = self.settings
        if self.exhausted:
            return False
        if self._off_since_s is not None and now_s - self._off_since_s < s.restart_min_off_s:
            return False
        while self._restarts and now_s - self._restarts[0] >= s.restart_window_s:
            self._restarts.popleft()
        if len(self._restarts) >= s.max_restarts:
            self.exhausted = True
            last = f" (last: {self.last_trip})" if self.last_trip else ""
            self.reason = (
                f"{len(self._restarts)} restart{'s' if len(self._restarts) != 1 else ''} in "
                f"{_duration(s.restart_window_s)}: needs service{last}"
            )
            return False
        return True

    def record_restart(self, now_s: float) -> None:
        self._restarts.append(now_s)
        self._off_since_s = None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        minutes = seconds / 60
        return "1 h" if round(minutes) == 60 else f"{minutes:.0f} min"
    return f"{seconds / 3600:g} h" if seconds % 3600 == 0 else f"{seconds / 3600:.1f} h"
