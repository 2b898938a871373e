"""Things that move or light up: each fan slowed and sped up again with its tachometer
(or fan controller) following, and each slot's locate LED blinked.

Fans are driven through the rig's fan objects (`set_duty`/`read`), so the same check
serves PWM-and-tach fans on GPIO and fans behind an I2C fan controller. One fan moves at
a time while the others hold full speed: a tachometer that follows another fan's duty
is crossed wiring, which a test of all fans together cannot see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hashbay.agent.selftest.report import Verdict
from hashbay.agent.selftest.session import Session

SLOWED = 0.7  # a fan turned down must fall below this share of its full-duty speed
RECOVERED = 0.75  # and come back above this share once turned up again (it sat near half)
UNMOVED = 0.8  # the fans left alone must stay above this share
TURNING_RPM = 300.0  # below this at full duty a fan is not turning
RATED_BAND = (0.5, 1.5)  # measured full speed against fan[N].rpm_max: outside it, look


@dataclass
class FanRun:
    full: list[float]  # rpm at full duty, before any fan moved
    low: list[float]  # fan i's rpm while fan i was turned down
    back: list[float]  # fan i's rpm after it was turned up again
    others_dropped: list[list[int]]  # while fan i was down, which other fans slowed


async def spin_fans(session: Session) -> None:
    rig = session.hardware()
    fans = rig.fans
    limits = session.config.limits
    high, low = limits.safe_fan_duty, limits.fan_duty_min
    for fan in fans:
        fan.set_duty(high)
    await session.wait_s(session.timings.fan_settle_s)
    run = FanRun(await _measure(session), [], [0.0] * len(fans), [])
    for i, fan in enumerate(fans):
        fan.set_duty(low)
        await session.wait_s(session.timings.fan_settle_s)
        speeds = await _measure(session)
        fan.set_duty(high)
        run.low.append(speeds[i])
        # The fan moved before this one is still speeding up: its reading is its
        # recovery, judged on its own.
        others = [j for j in range(len(fans)) if j not in (i, i - 1)]
        run.others_dropped.append([j for j in others if _dropped(run.full[j], speeds[j])])
        if i > 0:
            run.back[i - 1] = speeds[i - 1]
    await session.wait_s(session.timings.fan_settle_s)
    if fans:
        run.back[-1] = (await _measure(session))[-1]
    for i in range(len(fans)):
        _judge(session, i, run, high, low)


async def _measure(session: Session) -> list[float]:
    """Every fan's rpm over one counting window."""
    fans = session.hardware().fans
    for fan in fans:
        fan.read()  # starts a fresh window
    await session.wait_s(session.timings.fan_window_s)
    return [fan.read().rpm for fan in fans]


def _dropped(full: float, now: float) -> bool:
    return full >= TURNING_RPM and now < full * UNMOVED


def _judge(session: Session, i: int, run: FanRun, high: float, low: float) -> None:
    full, slowed, back = run.full[i], run.low[i], run.back[i]
    config = session.config.fan[i]
    part = f"fan {i}"
    item = f"speed at {high:.0%} → {low:.0%} → {high:.0%}"
    data = {"rpm_full": full, "rpm_low": slowed, "rpm_back": back, "rpm_max": config.rpm_max}
    seen = f"{full:.0f} rpm at {high:.0%}, {slowed:.0f} at {low:.0%}, {back:.0f} again"
    problem = _problem(i, run, full, slowed, back, low)
    if problem:
        session.unsafe.append(f"fan {i} did not confirm its speed")
        session.record(part, item, Verdict.FAIL, f"{problem} ({seen})", **data)
        return
    expected = config.rpm_max * high
    if not RATED_BAND[0] <= full / expected <= RATED_BAND[1]:
        session.record(
            part,
            item,
            Verdict.LOOK,
            f"{seen}; fan[{i}].rpm_max says {config.rpm_max:.0f} rpm at full speed: update it "
            "for the noise model",
            **data,
        )
        return
    session.record(part, item, Verdict.PASS, seen, **data)


def _problem(  # noqa: PLR0917 - one fan's figures, read together
    i: int, run: FanRun, full: float, slowed: float, back: float, low: float
) -> str:
    if full < TURNING_RPM:
        return (
            "not turning at full duty: stalled or unplugged, or its tachometer is not wired "
            "where the config says"
        )
    if slowed >= full * SLOWED:
        crossed = _others(run.others_dropped[i])
        if crossed:
            return (
                f"did not slow when its duty went to {low:.0%}, but {crossed} did: "
                f"PWM and tachometer wiring crossed between fans?"
            )
        return (
            f"did not slow when its duty went to {low:.0%}: its PWM line is not wired where "
            "the config says, or it is a 3-wire fan"
        )
    if back < full * RECOVERED:
        return "did not speed up again at full duty"
    followed = _others(run.others_dropped[i])
    if followed:
        return f"{followed} slowed as well when this fan was turned down: PWM lines shared?"
    return ""


def _others(indices: Sequence[int]) -> str:
    return ", ".join(f"fan {j}" for j in indices)


async def blink_leds(session: Session) -> None:
    seconds = session.timings.led_blink_s
    for hw in session.hardware().slots:
        pin = session.config.slot[hw.index].led_pin
        hw.pins.locate("blink")
        try:
            await session.wait_s(seconds)
        finally:
            hw.pins.locate("off")
        session.record(
            f"slot {hw.index}",
            f"locate LED blinked, pin {pin}",
            Verdict.LOOK,
            f"blinked for {seconds:g} s, now off: confirm it was slot {hw.index}'s LED",
        )
