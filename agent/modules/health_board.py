"""Heat and power of one hashing module, for its health: temperature sensors that are
lost, stuck or all gone (blind), the hottest usable reading, the DC-DC converter's heat,
and the rail voltage against the target the agent asked for."""

from __future__ import annotations

from collections import deque

from hashbay.agent.core.status import ModuleSample, Reason
from hashbay.agent.modules.health_settings import HealthSettings
from hashbay.agent.modules.health_words import FAULT_PENALTY, duration, others_mean, pct
from hashbay.agent.modules.sensor_track import PowerShare, SensorTrack


def stuck(
    track: SensorTrack, now_s: float, others_c: float | None, settings: HealthSettings
) -> bool:
    """Unchanged to the last bit for `stuck_after_s` while the board's power moved (and
    `stuck_settle_s` passed) or its other sensors moved: a sensor no longer measuring."""
    if track.unreadable_since_s is not None or now_s - track.since_s < settings.stuck_after_s:
        return False
    moved_s = track.power_moved_s
    if moved_s is not None and now_s - moved_s >= settings.stuck_settle_s:
        return True
    return (
        others_c is not None
        and track.others_ref_c is not None
        and abs(others_c - track.others_ref_c) >= settings.stuck_others_moved_c
    )


class BoardConditions:
    """Pure logic like the health model that owns it: no I/O, no clock."""

    def __init__(self, settings: HealthSettings, board_v_target: float | None) -> None:
        self.settings = settings
        self.board_v_target = board_v_target
        self._sensors: list[SensorTrack] = []
        self._blind_since_s: float | None = None
        self._rail_v: deque[float] = deque(maxlen=5)
        self._rail_unreadable_since_s: float | None = None

    def set_board_v_target(self, board_v: float | None) -> None:
        self.board_v_target = board_v
        self._rail_v.clear()

    def judge(self, sample: ModuleSample, reasons: list[Reason], faults: list[Reason]) -> None:
        self._judge_temperatures(sample, reasons, faults)
        self._judge_rail(sample, reasons, faults)

    def _judge_temperatures(
        self, sample: ModuleSample, reasons: list[Reason], faults: list[Reason]
    ) -> None:
        s = self.settings
        now = sample.at_s
        temps = sample.temps_c
        while len(self._sensors) < len(temps):
            self._sensors.append(SensorTrack(now))
        power_w = (
            sample.board_v * sample.board_a
            if sample.board_v is not None and sample.board_a is not None
            else None
        )
        readable = [t for t in temps if t is not None]
        total_c, count = sum(readable), len(readable)
        usable: list[tuple[float, int]] = []
        for index, (watch, reading) in enumerate(zip(self._sensors, temps, strict=False)):
            others = others_mean(total_c, count, reading)
            watch.see(reading, now, power_w, PowerShare(s.stuck_power_change), others)
            if reading is None:
                lost_s = now - (watch.unreadable_since_s or now)
                if lost_s >= s.sensor_lost_after_s:
                    reasons.append(
                        Reason(
                            "sensor_unreadable",
                            f"temperature sensor {index} unreadable for {duration(lost_s)}",
                            s.sensor_penalty,
                        )
                    )
            elif stuck(watch, now, others, s):
                reasons.append(
                    Reason(
                        "sensor_stuck",
                        f"temperature sensor {index} has read exactly {reading:.2f} °C for "
                        f"{duration(now - watch.since_s)} while the board's power or its "
                        "other sensors moved",
                        s.sensor_penalty,
                    )
                )
            else:
                usable.append((reading, index))
        if temps:
            self._judge_blind(bool(usable), now, faults)
        if usable:
            hottest_c, sensor = max(usable)
            if hottest_c >= s.temp_fault_c:
                faults.append(
                    Reason(
                        "overheat",
                        f"board at {hottest_c:.1f} °C (sensor {sensor}), fault at "
                        f"{s.temp_fault_c:g} °C",
                        FAULT_PENALTY,
                    )
                )
            elif hottest_c > s.temp_warn_c:
                reasons.append(
                    Reason(
                        "temp_high",
                        f"board at {hottest_c:.1f} °C (sensor {sensor}), warning above "
                        f"{s.temp_warn_c:g} °C, fault at {s.temp_fault_c:g} °C",
                        min(s.temp_penalty_max, s.temp_penalty_per_c * (hottest_c - s.temp_warn_c)),
                    )
                )
        dcdc_c = sample.dcdc_temp_c
        if dcdc_c is not None and dcdc_c > s.dcdc_warn_c:
            reasons.append(
                Reason(
                    "dcdc_hot",
                    f"DC-DC converter at {dcdc_c:.1f} °C, warning above {s.dcdc_warn_c:g} °C",
                    min(s.dcdc_penalty_max, s.dcdc_penalty_per_c * (dcdc_c - s.dcdc_warn_c)),
                )
            )

    def _judge_blind(self, any_usable: bool, now: float, faults: list[Reason]) -> None:
        if any_usable:
            self._blind_since_s = None
            return
        if self._blind_since_s is None:
            self._blind_since_s = now
        blind_s = now - self._blind_since_s
        if blind_s >= self.settings.blind_fault_after_s:
            faults.append(
                Reason(
                    "temps_unknown",
                    f"no usable temperature sensor for {duration(blind_s)}: overheating "
                    "would go unseen",
                    FAULT_PENALTY,
                )
            )

    def _judge_rail(
        self, sample: ModuleSample, reasons: list[Reason], faults: list[Reason]
    ) -> None:
        s = self.settings
        if sample.rail_fault:
            faults.append(
                Reason(
                    "rail_fault", f"power rail fault latched: {sample.rail_fault}", FAULT_PENALTY
                )
            )
        if sample.board_v is None:
            if self._rail_unreadable_since_s is None:
                self._rail_unreadable_since_s = sample.at_s
            lost_s = sample.at_s - self._rail_unreadable_since_s
            if lost_s >= s.rail_unreadable_after_s:
                reasons.append(
                    Reason(
                        "rail_unreadable",
                        f"rail voltage unreadable for {duration(lost_s)}",
                        s.rail_unreadable_penalty,
                    )
                )
            return
        self._rail_unreadable_since_s = None
        self._rail_v.append(sample.board_v)
        target = self.board_v_target
        if not target or sample.rail_fault:
            return
        board_v = sorted(self._rail_v)[len(self._rail_v) // 2]  # one odd reading is noise
        off = (board_v - target) / target
        excess = abs(off) - s.rail_tolerance
        if excess > 0:
            side = "above" if off > 0 else "below"
            reasons.append(
                Reason(
                    "rail_voltage",
                    f"rail at {board_v:.2f} V is {pct(abs(off))} {side} its {target:.2f} V target",
                    min(s.rail_penalty_max, s.rail_penalty_per_pct * excess * 100),
                )
            )
