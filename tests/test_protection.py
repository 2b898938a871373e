"""Per-board protection: tiers with hysteresis, sensor and power faults, and the way back."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashbay.agent.core.settings import parse_table
from hashbay.agent.daemon.config import load_config
from hashbay.agent.modules.protection import BoardGuard, RestartPolicy, Tier
from hashbay.agent.modules.protection_settings import ProtectionSettings
from hashbay.drivers.errors import ConfigError
from hashbay.tools.sim.plant import ThermalPlant

from .support import write_config

S = ProtectionSettings()  # warn 80, throttle 85, cutoff 92, hysteresis 5, steps of 10 % / 10 s


def guard_at(temps: list[float], *, start_s: float = 0.0, every_s: float = 1.0) -> BoardGuard:
    guard = BoardGuard(S)
    for n, temp in enumerate(temps):
        guard.assess(start_s + n * every_s, (temp - 3.0, temp))
    return guard


def test_a_cool_board_is_ok_and_runs_at_full_clock() -> None:
    verdict = BoardGuard(S).assess(0.0, (60.0, 64.0), 1300.0)
    assert (verdict.tier, verdict.freq_scale, verdict.changed) == (Tier.OK, 1.0, True)
    assert verdict.hottest_c == 64.0
    assert not verdict.tier.cuts_power


def test_tiers_escalate_warn_throttle_cut() -> None:
    guard = BoardGuard(S)
    assert guard.assess(0.0, (80.0,)).tier is Tier.WARN
    throttled = guard.assess(1.0, (85.0,))
    assert (throttled.tier, throttled.freq_scale) == (Tier.THROTTLE, 0.9)
    assert throttled.reason == "board at 85.0 °C, throttling at 85 °C: clock at 90%"
    cut = guard.assess(2.0, (92.0,))
    assert (cut.tier, cut.freq_scale) == (Tier.CUT, 0.0)
    assert cut.tier.cuts_power
    assert cut.reason == "board at 92.0 °C reached the 92 °C cutoff: power cut"
    assert guard.assess(3.0, (40.0,)).tier is Tier.CUT  # latched until the board restarts
    guard.reset()
    assert guard.assess(4.0, (40.0,)).tier is Tier.OK


def test_throttle_steps_down_every_interval_to_the_floor_then_holds() -> None:
    guard = BoardGuard(S)
    scales = [guard.assess(float(t), (88.0,)).freq_scale for t in range(0, 100)]
    assert scales[0] == 0.9  # the first step is immediate
    assert scales[9] == 0.9 and scales[10] == 0.8  # then one per throttle_interval_s
    assert min(scales) == S.throttle_min_scale
    assert scales[-1] == S.throttle_min_scale


def test_throttle_comes_back_only_below_the_hysteresis_band_one_step_at_a_time() -> None:
    guard = BoardGuard(S)
    for t in range(0, 25):
        guard.assess(float(t), (86.0,))
    assert guard.freq_scale == pytest.approx(0.7)
    for t in range(25, 200):  # inside the band: hold
        verdict = guard.assess(float(t), (82.0,))
        assert verdict.freq_scale == pytest.approx(0.7)
    assert "steps back up below 80 °C" in verdict.reason
    ups = [guard.assess(float(t), (79.9,)).freq_scale for t in range(200, 240)]
    assert ups[0] == pytest.approx(0.8)
    assert ups[10] == pytest.approx(0.9)
    assert ups[20] == 1.0
    assert guard.assess(240.0, (79.9,)).tier is Tier.WARN  # still within the warning band
    assert guard.assess(241.0, (74.9,)).tier is Tier.OK


@given(st.lists(st.floats(min_value=S.cool_c + 0.01, max_value=S.throttle_c - 0.01), max_size=60))
def test_a_noisy_reading_inside_the_band_never_moves_the_clock(noise: list[float]) -> None:
    guard = guard_at([86.0])
    for n, temp in enumerate(noise):
        verdict = guard.assess(1.0 + n * 3.0, (temp,))
        assert verdict.freq_scale == pytest.approx(0.9)
        assert not verdict.changed


@given(st.lists(st.floats(min_value=S.cool_c + 0.01, max_value=S.cutoff_c - 0.01), max_size=80))
def test_readings_hovering_around_the_throttle_limit_only_ever_step_down(
    noise: list[float],
) -> None:
    guard = guard_at([86.0])
    scale = guard.freq_scale
    for n, temp in enumerate(noise):
        verdict = guard.assess(1.0 + n * 4.0, (temp,))
        assert verdict.freq_scale <= scale  # no chatter: never back up inside the band
        assert verdict.tier is Tier.THROTTLE
        scale = verdict.freq_scale


@given(st.lists(st.floats(min_value=S.warn_c - S.hysteresis_c + 0.01, max_value=84.9), max_size=50))
def test_a_warning_clears_only_below_its_hysteresis(noise: list[float]) -> None:
    guard = guard_at([81.0])
    for n, temp in enumerate(noise):
        assert guard.assess(1.0 + n, (temp,)).tier is Tier.WARN


def test_throttling_holds_a_board_whose_fans_cannot_cope_below_the_cutoff() -> None:
    """Closed loop on the simulator's physics: fans stuck at 45 %, a 1.3 kW board would
    settle near 95 °C; throttling (power ∝ clock) holds it inside the throttle band."""
    plant = ThermalPlant(boards=1, power_w=1300.0, duty=0.45, start_c=60.0)
    try:
        guard = BoardGuard(S)
        verdicts = []
        peak_c = 0.0
        for t in range(1800):
            hottest = plant.hottest_c()
            peak_c = max(peak_c, hottest)
            verdict = guard.assess(float(t), (hottest - 7.0, hottest), plant.power_w[0])
            plant.power_w = [1300.0 * verdict.freq_scale]
            plant.step(1.0)
            verdicts.append(verdict)
        assert not any(v.tier.cuts_power for v in verdicts)
        assert peak_c < S.throttle_c + 1.0
        settled = verdicts[-900:]
        assert len({v.freq_scale for v in settled}) == 1  # no chatter once settled
        assert 0.5 < settled[-1].freq_scale < 1.0
        assert sum(v.changed for v in verdicts) <= 8
    finally:
        plant.close()


def test_a_stalled_fan_throttles_at_once_and_lifts_when_it_turns_again() -> None:
    guard = BoardGuard(S)
    stalled = guard.assess(0.0, (70.0,), fans_stalled=2)
    assert (stalled.tier, stalled.freq_scale) == (Tier.THROTTLE, S.stall_scale)
    assert stalled.reason == "2 fans stalled: clock at 70%"
    freed = guard.assess(1.0, (70.0,), fans_stalled=0)
    assert (freed.tier, freed.freq_scale, freed.changed) == (Tier.OK, 1.0, True)


def test_a_sensor_unreadable_for_sensor_lost_s_cuts_the_board() -> None:
    guard = BoardGuard(S)
    guard.assess(0.0, (70.0, 72.0))
    assert guard.assess(1.0, (70.0, None)).tier is Tier.OK  # one missed read is bus noise
    for n in range(1, 10):
        assert guard.assess(1.0 + n * 0.5, (70.0, None)).tier is Tier.OK
    assert guard.assess(5.9, (70.0, None)).tier is Tier.OK
    lost = guard.assess(6.0, (70.0, None))
    assert lost.tier is Tier.SENSOR_FAULT and lost.tier.cuts_power
    assert lost.reason == (
        "temperature sensor 1 unreadable for 5 s: the board cannot be watched, power cut"
    )


def test_a_few_failed_reads_far_apart_are_not_a_lost_sensor() -> None:
    guard = BoardGuard(S)
    guard.assess(0.0, (70.0, 72.0))
    guard.assess(1.0, (70.0, None))
    after_a_stall = guard.assess(9.0, (70.0, None))  # the loop stood still in between
    assert (after_a_stall.tier, after_a_stall.unreadable) == (Tier.OK, ())


def test_an_unreadable_sensor_is_reported_on_its_own_after_the_debounce() -> None:
    guard = BoardGuard(S)
    guard.assess(0.0, (70.0, 72.0))
    verdicts = [
        guard.assess(1.0 + n * 0.05, (70.0, None)) for n in range(S.sensor_unreadable_reads)
    ]
    assert all(v.unreadable == () for v in verdicts)  # 10 reads, but only 0.45 s
    late = guard.assess(1.5, (70.0, None))
    assert (late.tier, late.unreadable, late.changed) == (Tier.OK, (1,), False)
    assert guard.assess(1.55, (70.0, 71.0)).unreadable == ()


def test_a_sensor_that_reads_again_is_forgiven() -> None:
    guard = BoardGuard(S)
    for t in range(0, 60, 2):
        guard.assess(float(t), (70.0, None))
        verdict = guard.assess(t + 1.0, (70.0, 71.0))
    assert verdict.tier is Tier.OK


def test_no_readable_sensor_at_all_holds_the_tier_then_cuts() -> None:
    guard = BoardGuard(S)
    first = guard.assess(0.0, (None, None))
    assert first.tier is Tier.OK and first.hottest_c is None  # not a temperature: no warning
    for n in range(1, 10):
        assert guard.assess(n * 0.5, (None, math.nan)).tier is Tier.OK
    assert guard.assess(5.0, (math.nan, None)).tier is Tier.SENSOR_FAULT
    warm = BoardGuard(S)
    warm.assess(0.0, (81.0,))
    assert warm.assess(0.1, (None,)).tier is Tier.WARN  # a warning in force stays
    nothing = BoardGuard(S)
    nothing.assess(0.0, ())
    assert nothing.assess(5.0, ()).reason.startswith("no temperature sensor reported")


def test_a_reading_frozen_while_the_power_moves_is_a_stuck_sensor() -> None:
    guard = BoardGuard(S)
    guard.assess(0.0, (70.0, 70.0625), 1300.0)
    guard.assess(1.0, (70.5, 70.0625), 1300.0)
    for t in range(2, 62):  # the power drops by 200 W at t=2; sensor 1 never moves
        verdict = guard.assess(float(t), (70.5 - t * 0.05, 70.0625), 1100.0)
        assert verdict.tier is not Tier.SENSOR_FAULT
    stuck = guard.assess(62.0, (67.0, 70.0625), 1100.0)
    assert stuck.tier is Tier.SENSOR_FAULT
    assert stuck.reason.startswith("temperature sensor 1 stuck at 70.06 °C for 62 s")


def test_a_steady_reading_at_steady_power_is_not_stuck() -> None:
    guard = BoardGuard(S)
    for t in range(0, 600, 5):
        verdict = guard.assess(float(t), (70.0, 74.0), 1300.0 + (t % 3))
    assert verdict.tier is Tier.OK


def test_a_rail_fault_cuts_the_board_with_its_words() -> None:
    verdict = BoardGuard(S).assess(0.0, (70.0,), rail_fault="DC-DC over-current")
    assert (verdict.tier, verdict.freq_scale) == (Tier.POWER_FAULT, 0.0)
    assert verdict.reason == "power fault: DC-DC over-current"


def test_changed_flags_only_real_changes() -> None:
    guard = BoardGuard(S)
    assert guard.assess(0.0, (60.0,)).changed
    assert not guard.assess(1.0, (61.0,)).changed
    assert guard.assess(2.0, (81.0,)).changed


# -- coming back -------------------------------------------------------------------------


def test_a_cut_board_restarts_once_cool_and_off_long_enough() -> None:
    policy = RestartPolicy(S)
    policy.tripped(100.0, "board at 92.0 °C reached the 92 °C cutoff: power cut")
    assert not policy.cooled((85.0, 79.0))
    assert not policy.cooled((70.0, None))  # cannot prove it is cool
    assert not policy.cooled(())
    assert policy.cooled((70.0, 79.9))
    assert not policy.may_restart(110.0)  # restart_min_off_s
    assert policy.may_restart(130.0)
    policy.record_restart(130.0)
    assert policy.restarts == 1


def test_too_many_restarts_in_the_window_leave_the_board_off_for_service() -> None:
    policy = RestartPolicy(S)
    for n in range(3):
        policy.tripped(n * 600.0, "board at 93.0 °C reached the 92 °C cutoff: power cut")
        assert policy.may_restart(n * 600.0 + 60)
        policy.record_restart(n * 600.0 + 60)
    policy.tripped(1900.0, "board at 92.5 °C reached the 92 °C cutoff: power cut")
    assert not policy.may_restart(2000.0)
    assert policy.exhausted
    assert policy.reason == (
        "3 restarts in 1 h: needs service "
        "(last: board at 92.5 °C reached the 92 °C cutoff: power cut)"
    )
    assert not policy.may_restart(99999.0)  # latched: a person must look at it
    policy.reset()
    assert policy.may_restart(99999.0)


def test_restarts_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(S)
    for n in range(3):
        policy.record_restart(n * 100.0)
    policy.tripped(3650.0)
    assert policy.may_restart(3700.0)  # the first restart (t=0) is over an hour old


def test_no_automatic_restart_when_max_restarts_is_zero() -> None:
    policy = RestartPolicy(ProtectionSettings(max_restarts=0))
    policy.tripped(0.0)
    assert not policy.may_restart(1000.0)
    assert policy.reason.startswith("0 restarts in 1 h: needs service")


def test_thresholds_must_be_in_order(tmp_path: Path) -> None:
    path = write_config(tmp_path / "a.toml", "[protection]\nwarn_c = 90\n")
    with pytest.raises(ConfigError, match=r"warn_c 90\.0 < throttle_c 85\.0 < cutoff_c 92\.0"):
        load_config(path)
    quiet_too_hot = write_config(tmp_path / "b.toml", "[thermal]\ntarget_c = 78\n")
    with pytest.raises(ConfigError, match=r"thermal\.target_c: 78 °C plus"):
        load_config(quiet_too_hot)


# -- the settings' ranges, written out: a wrong bound is a wrong safety limit ---------------

PROTECTION_SETTINGS = {  # name: (default, lowest accepted, highest accepted)
    "check_interval_s": (0.02, 0.005, 1),
    "warn_c": (80.0, 30, 150),
    "throttle_c": (85.0, 30, 150),
    "cutoff_c": (92.0, 30, 150),
    "hysteresis_c": (5.0, 0.5, 30),
    "throttle_step": (0.1, 0.01, 0.5),
    "throttle_min_scale": (0.5, 0.1, 1),
    "throttle_interval_s": (10.0, 0.5, 600),
    "stall_scale": (0.7, 0.1, 1),
    "sensor_lost_s": (5.0, 0, 600),
    "sensor_stuck_s": (60.0, 1, 3600),
    "stuck_power_change_w": (100.0, 10, 5000),
    "max_restarts": (3, 0, 100),
    "restart_window_s": (3600.0, 60, 7 * 86400),
    "restart_min_off_s": (30.0, 0, 3600),
    "alert_fault_queue": (1, 1, 6),
    "backup_interval_s": (0.5, 0.02, 5),
}


def range_error(name: str, value: float) -> str | None:
    """The range error for one protection setting at `value`, or None if it is in range
    (the three temperatures may still be refused for their order, which is not this)."""
    try:
        parse_table(ProtectionSettings, {name: value}, "protection")
    except ConfigError as exc:
        if str(exc).startswith(f"protection.{name}: must be"):
            return str(exc)
    return None


@pytest.mark.parametrize("name", sorted(PROTECTION_SETTINGS))
def test_protection_settings_default_and_range_are_the_documented_ones(name: str) -> None:
    default, low, high = PROTECTION_SETTINGS[name]
    assert getattr(ProtectionSettings(), name) == default
    past = 1 if isinstance(default, int) else 0.5  # inside the next mutation (+1)
    assert range_error(name, low) is None
    assert range_error(name, high) is None
    assert range_error(name, low - past) is not None
    assert range_error(name, high + past) is not None


def test_a_sensor_is_unreadable_at_exactly_the_configured_failed_reads() -> None:
    settings = replace(S, sensor_unreadable_reads=4, sensor_unreadable_s=0.0)
    guard = BoardGuard(settings)
    guard.assess(BOOT, (70.0, 71.0))
    for n in range(1, 4):  # three failed reads: still bus noise
        assert guard.assess(BOOT + n * 0.02, (70.0, None)).unreadable == ()
    assert guard.assess(BOOT + 0.08, (70.0, None)).unreadable == (1,)  # the fourth


@pytest.mark.parametrize("queue", [3, 5])
def test_an_alert_fault_queue_the_sensors_cannot_count_is_refused(queue: int) -> None:
    with pytest.raises(ConfigError, match="alert_fault_queue: must be one of 1, 2, 4, 6"):
        ProtectionSettings(alert_fault_queue=queue)
    for counted in (1, 2, 4, 6):
        assert ProtectionSettings(alert_fault_queue=counted).alert_fault_queue == counted


# -- a real monotonic clock: days after boot, not near zero -------------------------------

BOOT = 3 * 86_400.0 + 0.375  # a controller up for three days
# The lost-sensor clock alone: one failed read is enough to start and to keep it (the
# debounce of single failed reads is tested on its own).
EVERY_READ_COUNTS = replace(S, sensor_unreadable_reads=1)


def test_restarts_days_after_boot_are_counted_in_the_window_and_then_need_service() -> None:
    policy = RestartPolicy(S)
    for n in range(3):
        policy.tripped(BOOT + n * 600.0, "board at 93.0 °C reached the 92 °C cutoff: power cut")
        assert not policy.may_restart(BOOT + n * 600.0 + 29.9)  # restart_min_off_s
        assert policy.may_restart(BOOT + n * 600.0 + 30.0)
        policy.record_restart(BOOT + n * 600.0 + 30.0)
    policy.tripped(BOOT + 1900.0)
    assert not policy.may_restart(BOOT + 2000.0)
    assert policy.exhausted and policy.reason.startswith("3 restarts in 1 h: needs service")


def test_restarts_days_after_boot_are_forgotten_exactly_one_window_later() -> None:
    policy = RestartPolicy(S)
    for n in range(3):
        policy.record_restart(BOOT + n * 100.0)
    policy.tripped(BOOT + 3000.0)
    almost = RestartPolicy(S)
    for n in range(3):
        almost.record_restart(BOOT + n * 100.0)
    assert not almost.may_restart(BOOT + 3599.9)  # all three still inside the hour
    assert almost.exhausted
    assert policy.may_restart(BOOT + 3600.0)  # the first is exactly an hour old: forgotten
    assert policy.restarts == 2


def test_a_lost_sensor_days_after_boot_is_cut_after_sensor_lost_s_not_before() -> None:
    guard = BoardGuard(EVERY_READ_COUNTS)
    guard.assess(BOOT, (70.0, 72.0))
    assert guard.assess(BOOT + 1.0, (70.0, None)).tier is Tier.OK
    assert guard.assess(BOOT + 5.9, (70.0, None)).tier is Tier.OK
    assert guard.assess(BOOT + 6.0, (70.0, None)).tier is Tier.SENSOR_FAULT
    silent = BoardGuard(EVERY_READ_COUNTS)
    assert silent.assess(BOOT, ()).tier is Tier.OK  # no reading: the tier holds
    assert silent.assess(BOOT + 4.9, ()).tier is Tier.OK
    assert silent.assess(BOOT + 5.0, ()).tier is Tier.SENSOR_FAULT


def test_throttle_steps_days_after_boot_keep_their_interval() -> None:
    guard = BoardGuard(S)
    scales = [guard.assess(BOOT + t, (88.0,)).freq_scale for t in range(0, 25)]
    assert scales[0] == 0.9 and scales[9] == 0.9 and scales[10] == 0.8 and scales[20] == 0.7
    ups = [guard.assess(BOOT + t, (70.0,)).freq_scale for t in range(25, 50)]
    # The last step down was at +20 s: the first step up waits until +30 s, the next +40 s.
    assert ups[4] == pytest.approx(0.7) and ups[5] == pytest.approx(0.8)
    assert ups[14] == pytest.approx(0.8) and ups[15] == pytest.approx(0.9)


def test_a_stuck_sensor_days_after_boot_is_cut_after_sensor_stuck_s() -> None:
    guard = BoardGuard(S)
    guard.assess(BOOT, (70.0, 66.5), 1300.0)
    for t in range(1, 61):  # the power drops by 150 W at once; sensor 1 never moves
        verdict = guard.assess(BOOT + t, (70.0 - t * 0.05, 66.5), 1150.0)
        assert verdict.tier is not Tier.SENSOR_FAULT
    assert guard.assess(BOOT + 61.0, (66.0, 66.5), 1150.0).tier is Tier.SENSOR_FAULT


# -- edges of the guard ------------------------------------------------------------------------


@pytest.mark.parametrize("temps", [(85.0, 85.0, 92.0), (80.0, 92.0, 92.0), (80.0, 80.0, 80.0)])
def test_thresholds_that_coincide_are_refused(temps: tuple[float, float, float]) -> None:
    warn, throttle, cutoff = temps
    with pytest.raises(ConfigError, match="must hold"):
        ProtectionSettings(warn_c=warn, throttle_c=throttle, cutoff_c=cutoff)


def test_a_fresh_board_inside_the_warning_band_is_not_warned() -> None:
    guard = BoardGuard(S)
    assert guard.assess(BOOT, (77.0,)).tier is Tier.OK  # the band only holds a warning
    assert guard.assess(BOOT + 1, (80.0,)).tier is Tier.WARN
    assert guard.assess(BOOT + 2, (75.0,)).tier is Tier.WARN  # at the band's edge: held
    assert guard.assess(BOOT + 3, (74.99,)).tier is Tier.OK
    guard.assess(BOOT + 4, (81.0,))
    guard.reset()
    assert guard.assess(BOOT + 5, (77.0,)).tier is Tier.OK  # a restarted board starts clear


def test_a_cut_board_runs_at_no_clock_until_it_is_restarted() -> None:
    guard = BoardGuard(S)
    guard.assess(BOOT, (93.0,))
    assert guard.freq_scale == 0.0
    later = guard.assess(BOOT + 1, (40.0,))
    assert (later.tier, later.freq_scale, later.changed) == (Tier.CUT, 0.0, False)
    guard.reset()
    assert guard.freq_scale == 1.0


def test_a_power_change_of_exactly_stuck_power_change_w_moves_a_live_sensor() -> None:
    guard = BoardGuard(S)
    guard.assess(BOOT, (70.0, 66.5), 1300.0)
    for t in range(1, 61):
        assert guard.assess(BOOT + t, (70.0 - t * 0.05, 66.5), 1200.0).tier is Tier.OK
    assert guard.assess(BOOT + 61, (66.0, 66.5), 1200.0).tier is Tier.SENSOR_FAULT


def test_the_stuck_clock_starts_at_the_first_power_move_and_missing_power_is_no_move() -> None:
    guard = BoardGuard(S)
    guard.assess(BOOT, (70.0, 66.5), 1300.0)
    for t in range(1, 61):  # power falls at +1 s and again at +30 s; unknown now and then
        power = None if t % 7 == 0 else (1150.0 if t < 30 else 1000.0)
        assert guard.assess(BOOT + t, (70.0 - t * 0.05, 66.5), power).tier is Tier.OK
    assert guard.assess(BOOT + 61, (66.0, 66.5), 1000.0).tier is Tier.SENSOR_FAULT


def test_an_unreadable_sample_is_judged_lost_not_stuck() -> None:
    guard = BoardGuard(S)
    guard.assess(BOOT, (70.0, 66.5), 1300.0)
    for t in range(1, 61):
        guard.assess(BOOT + t, (70.0 - t * 0.05, 66.5), 1150.0)
    blank = guard.assess(BOOT + 61, (66.0, None), 1150.0)
    assert blank.tier is Tier.OK  # one missed read: not yet lost, and not a stuck value
    stuck = guard.assess(BOOT + 62, (66.0, 66.5), 1150.0)
    assert stuck.tier is Tier.SENSOR_FAULT and "stuck at 66.50 °C" in stuck.reason


def test_a_frozen_sensor_that_stops_answering_is_judged_by_its_silence_not_as_stuck() -> None:
    guard = BoardGuard(S)
    guard.assess(BOOT, (70.0, 66.5), 1300.0)
    for t in range(1, 61):  # sensor 1 frozen since the power moved at +1 s: 59 s of 60
        assert guard.assess(BOOT + t, (70.0 - t * 0.05, 66.5), 1150.0).tier is Tier.OK
    silent = [guard.assess(BOOT + 61 + n * 0.1, (66.0, None), 1150.0) for n in range(40)]
    assert all(v.tier is Tier.OK for v in silent)  # unreadable, and not yet for long
    assert silent[-1].unreadable == (1,)
    lost = guard.assess(BOOT + 66, (66.0, None), 1150.0)
    assert lost.tier is Tier.SENSOR_FAULT
    assert lost.reason.startswith("temperature sensor 1 unreadable for 5 s")


def test_a_verdict_tells_the_temperature_or_that_no_sensor_read() -> None:
    guard = BoardGuard(S)
    warm = guard.assess(BOOT, (81.0,))
    assert (warm.tier, warm.reason) == (Tier.WARN, "board at 81.0 °C, warning from 80 °C")
    blank = guard.assess(BOOT + 0.1, (None,))  # the warning holds, on no temperature
    assert (blank.tier, blank.reason) == (Tier.WARN, "no sensor read this time: tier held")
    assert BoardGuard(S).assess(BOOT, (70.0,)).reason == "board at 70.0 °C"


def test_a_sensor_that_appears_later_is_watched_from_when_it_appeared() -> None:
    guard = BoardGuard(EVERY_READ_COUNTS)
    guard.assess(BOOT, (70.0,))
    assert guard.assess(BOOT + 10, (70.0, None)).tier is Tier.OK
    assert guard.assess(BOOT + 14.9, (70.0, None)).tier is Tier.OK
    assert guard.assess(BOOT + 15, (70.0, None)).tier is Tier.SENSOR_FAULT


def test_the_hottest_sensor_counts_wherever_it_sits() -> None:
    verdict = BoardGuard(S).assess(BOOT, (93.0, 70.0, 71.0))
    assert (verdict.tier, verdict.hottest_c) == (Tier.CUT, 93.0)


def test_a_board_long_at_the_throttle_floor_steps_up_as_soon_as_it_cools() -> None:
    guard = BoardGuard(S)
    for t in range(0, 101):  # the floor (50 %) is reached at +40 s; still hot until +100 s
        guard.assess(BOOT + t, (88.0,))
    assert guard.freq_scale == 0.5
    assert guard.assess(BOOT + 101, (70.0,)).freq_scale == pytest.approx(0.6)


def test_a_cool_board_at_full_clock_steps_down_as_soon_as_it_heats() -> None:
    guard = BoardGuard(S)
    for t in range(0, 96):
        guard.assess(BOOT + t, (60.0,))
    assert guard.assess(BOOT + 96, (86.0,)).freq_scale == pytest.approx(0.9)


def test_the_clock_steps_back_up_only_below_the_band_and_never_past_full() -> None:
    settings = ProtectionSettings(throttle_min_scale=0.55)
    guard = BoardGuard(settings)
    for t in range(0, 50, 10):  # 0.9, 0.8, 0.7, 0.6, then the 0.55 floor
        guard.assess(BOOT + t, (88.0,))
    assert guard.freq_scale == pytest.approx(0.55)
    assert guard.assess(BOOT + 50, (80.0,)).freq_scale == pytest.approx(0.55)  # at the edge
    ups = [guard.assess(BOOT + t, (79.99,)).freq_scale for t in range(60, 120, 10)]
    assert ups == pytest.approx([0.65, 0.75, 0.85, 0.95, 1.0, 1.0])


def test_one_stalled_fan_throttles_too() -> None:
    verdict = BoardGuard(S).assess(BOOT, (60.0,), fans_stalled=1)
    assert (verdict.tier, verdict.freq_scale) == (Tier.THROTTLE, 0.7)
    assert verdict.reason == "1 fan stalled: clock at 70%"


def test_a_board_throttled_by_heat_to_the_stall_scale_keeps_its_heat_reason() -> None:
    guard = BoardGuard(S)
    for t in range(0, 30, 10):  # 0.9, 0.8, 0.7
        guard.assess(BOOT + t, (88.0,))
    verdict = guard.assess(BOOT + 25, (88.0,), fans_stalled=1)
    assert verdict.freq_scale == pytest.approx(0.7)
    assert verdict.reason.startswith("board at 88.0 °C, throttling at 85 °C")


def test_a_board_is_cool_enough_to_restart_only_below_the_band() -> None:
    policy = RestartPolicy(S)
    assert not policy.cooled((80.0,))
    assert policy.cooled((79.99, 50.0))
    assert not policy.cooled((70.0, math.inf))


@pytest.mark.parametrize(
    ("window_s", "words"),
    [
        (60, "60 s"),
        (119, "119 s"),
        (120, "2 min"),
        (3540, "59 min"),
        (3600, "1 h"),
        (5400, "90 min"),
        (7199, "120 min"),
        (7200, "2 h"),
        (9000, "2.5 h"),
        (86_400, "24 h"),
    ],
)
def test_the_service_reason_gives_the_window_in_words(window_s: float, words: str) -> None:
    policy = RestartPolicy(ProtectionSettings(max_restarts=0, restart_window_s=window_s))
    assert not policy.may_restart(BOOT)
    assert policy.reason == f"0 restarts in {words}: needs service"
