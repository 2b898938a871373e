"""The simulated rig: backplane, slots, modules, fans, PSU and physics, behind the same
interfaces real hardware offers — an smbus2-like I2C bus, gpiozero MockFactory pins and
one pseudo-terminal per slot UART.

It runs in one thread of its own (`start`), stepping physics at a fixed cadence in
simulated time (`time_scale` simulated seconds per real second) and moving bytes
between the ptys and the chains at the chips' baud rate. Tests that need no UART can
instead drive it by hand with `advance` (faster than real time, fully deterministic).
Everything random comes from one seeded generator.
"""

from __future__ import annotations

import math
import random
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from hashbay.agent.daemon.config import Config
from hashbay.tools.sim import physics
from hashbay.tools.sim.fans import SimFan, wire_fans
from hashbay.tools.sim.faults import FaultCommand, ScheduledFault, load_scenario
from hashbay.tools.sim.i2c import SimI2CBus
from hashbay.tools.sim.irq import IrqLines
from hashbay.tools.sim.module import ModuleSpec, SimModule
from hashbay.tools.sim.pins import sim_pin_factory
from hashbay.tools.sim.pmbus_devices import SimHotSwap, SimPsu
from hashbay.tools.sim.threads import name_os_thread
from hashbay.tools.sim.uart import PtyLine

log = structlog.get_logger("hashbay.sim")

IO_PERIOD_S = 0.01  # real seconds between UART/pin services
MAX_TICK_S = 0.05  # real seconds one simulator tick may credit (see SimClock)
MAX_LEAD_S = 0.02  # how far past its last tick a reader may see the clock
PHYSICS_PERIOD_S = 0.1  # simulated seconds between physics steps
ADVANCE_STEP_S = 1.0
"""Longest physics step `advance` takes. Every model integrates its step exactly, so this
only bounds how stale one model's input from another may get (airflow seen by a board,
a board's load seen by its hot-swap): well below the boards' thermal time constant
(46 s at full airflow) and about the fans' spin-up time. It is what lets a test run a
simulated hour in about a second."""
EPSILON_S = 1e-9
FAN_POWER_MAX_W = 36.0
CONTROLLER_W = 8.0
BOUNCES = 5
BOUNCE_LEVEL_S = 0.001  # simulated seconds a bouncing contact holds each level


class SimClock:
    """Simulated seconds: scaled real time while running, explicit steps otherwise.

    While running, time moves only in the simulator thread's ticks, and one tick credits
    at most MAX_TICK_S of real time: a simulator starved of CPU (a busy machine, a slow
    board) is a slower world, not a broken one — no fan misses tach pulses, no chip its
    nonces, no board its heat, because time did not pass for them either. Readers see up
    to MAX_LEAD_S past the last tick, so time flows smoothly between ticks and stops
    shortly after the simulator does; MAX_LEAD_S <= MAX_TICK_S keeps it monotonic.
    """

    def __init__(self, scale: float) -> None:
        self.scale = scale
        # (simulated time at the last tick, its time.monotonic() or None when frozen):
        # one tuple, replaced whole, so a reader on another thread sees a consistent pair.
        self._tick: tuple[float, float | None] = (0.0, None)
        self.lost_s = 0.0  # real seconds the simulator could not keep up with

    def now(self) -> float:
        sim, real = self._tick
        if real is None:
            return sim
        lead = min(max(time.monotonic() - real, 0.0), MAX_LEAD_S)
        return sim + lead * self.scale

    def run(self) -> None:
        self._tick = (self._tick[0], time.monotonic())

    def tick(self) -> float:
        """The simulator thread's heartbeat: credit the real time since the last tick (at
        most MAX_TICK_S of it) and return the new simulated time."""
        sim, real = self._tick
        if real is None:
            raise RuntimeError("the clock is not running")
        now_real = time.monotonic()
        gap = max(now_real - real, 0.0)
        credited = min(gap, MAX_TICK_S)
        self.lost_s += gap - credited
        sim += credited * self.scale
        self._tick = (sim, now_real)
        return sim

    def freeze(self) -> None:
        self._tick = (self.now(), None)

    def advance(self, dt_s: float) -> None:
        sim, real = self._tick
        if real is not None:
            raise RuntimeError("cannot advance a running clock by hand")
        self._tick = (sim + dt_s, None)


@dataclass
class Bounce:
    """A presence contact settling: levels it shows in turn, the next one at `next_s`,
    then one every BOUNCE_LEVEL_S of simulated time, the last one where it comes to rest.

    Timed in simulated time, not per service call, so the bounce lasts the same whatever
    the time scale or the step size (a debounce in the driver sees the same contact).
    """

    levels: list[bool]
    next_s: float


class SimSlot:
    def __init__(self, rig: SimRig, index: int, config: Any) -> None:
        self.index = index
        self.config = config
        self.hotswap = SimHotSwap(config.hotswap_address)
        self.hotswap.vin_v = rig.psu.vout_v  # the 54 V bus is up before anything starts
        # gpiozero factories hand out one object per pin, so these can be kept.
        self.presence_pin = rig.pin_factory.pin(config.presence_pin)
        self.power_pin = rig.pin_factory.pin(config.power_pin)
        self.reset_pin = rig.pin_factory.pin(config.reset_pin)
        # The sensors' OS/ALERT outputs, open drain and wired together, pulled up: high
        # unless a seated module's sensor pulls it low.
        self.alert_pin = (
            rig.pin_factory.pin(config.alert_pin) if config.alert_pin is not None else None
        )
        self.alert_low = False
        self.line = PtyLine(rig.rng)
        self.module: SimModule | None = None
        self.shelf: SimModule | None = None  # the module last pulled from here
        self.bounce: Bounce | None = None


@dataclass
class CutoffWatch:
    """When a board's sensors first showed `threshold_c`, and when its power enable then
    dropped (both time.monotonic()): the protection path's latency, seen from outside."""

    slot: int
    threshold_c: float
    crossed_at: float | None = None
    cut_at: float | None = None


class SimRig:
    """The whole simulated machine. Thread-safe: faults and steps take `lock`."""

    def __init__(self, config: Config) -> None:
        sim = config.sim
        self.config = config
        # Before anything is opened: a bad scenario file must not leak the ptys.
        self.scenario: list[ScheduledFault] = (
            load_scenario(Path(sim.scenario)) if sim.scenario else []
        )
        self.rng = random.Random(sim.seed)
        self.clock = SimClock(sim.time_scale)
        self.lock = threading.RLock()
        self.ambient_c = sim.ambient_c
        self.module_spec = ModuleSpec(
            sim.chip_model, sim.chips_per_board, sim.chips_per_domain, sim.ticket_zero_bits
        )
        self.i2c = SimI2CBus(rng=random.Random(sim.seed + 1))
        self.irq = IrqLines()
        self.pin_factory = sim_pin_factory()
        self.psu = SimPsu(config.hardware.psu_address, efficiency=physics.psu_efficiency)
        self.i2c.attach(self.psu.address, self.psu)
        self.fans, self.fan_controller = wire_fans(
            config, self.pin_factory, self.i2c, self.clock.now
        )
        self.slots = [SimSlot(self, i, s) for i, s in enumerate(config.slot)]
        for slot in self.slots:
            self.i2c.attach(slot.hotswap.address, slot.hotswap)
        self._serials = 0
        for index in sim.modules:
            self._seat(self.slots[index], self._new_module(), bounce=False)
        self.applied: list[tuple[float, str]] = []
        self._last_physics = self.clock.now()
        self.watches: list[CutoffWatch] = []
        self._last_fans = self._last_physics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cpu_s = 0.0  # CPU time of the simulator thread, for the benchmark
        # Presence lines held from the first moment, and faults due at 0 s already in
        # place: whatever connects first finds the rig as the config and scenario say.
        self._service_pins()
        self._play_scenario(self.clock.now())

    # -- what the agent connects to ----------------------------------------------------

    @property
    def uart_paths(self) -> list[str]:
        return [slot.line.path for slot in self.slots]

    def now(self) -> float:
        return self.clock.now()

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Run in real time (scaled) on a thread of its own."""
        if self._thread is not None:
            return
        self.irq.start()
        self.clock.run()
        self._last_physics = self._last_fans = self.clock.now()
        self._thread = threading.Thread(target=self._run, name="sim-rig", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self.irq.stop()
        self.clock.freeze()
        for slot in self.slots:
            slot.line.close()

    def advance(self, seconds: float) -> None:
        """Step the rig by hand, faster than real time (no UART traffic moves).

        Steps are at most ADVANCE_STEP_S long and end exactly where a scenario event or a
        bouncing contact's next level is due, so both happen at their simulated time
        however the caller slices the run; pins changed between calls are seen at once.
        """
        end = self.clock.now() + seconds
        while (left := end - self.clock.now()) > EPSILON_S:
            with self.lock:
                now = self.clock.now()
                self._play_scenario(now)
                self._service_pins()
                self.clock.advance(min(ADVANCE_STEP_S, left, self._next_due_s() - now))
                self._service_pins()
                self._physics()

    def _next_due_s(self) -> float:
        """When the next scenario event or bounce level is due (after now), or inf."""
        due = [slot.bounce.next_s for slot in self.slots if slot.bounce is not None]
        if self.scenario:
            due.append(self.scenario[0].at_s)
        return min(due, default=math.inf)

    def _run(self) -> None:
        name_os_thread("sim-rig")
        fds = [slot.line.master_fd for slot in self.slots]
        started_cpu = time.thread_time()
        last_io = time.monotonic()
        while not self._stop.is_set():
            select.select(fds, [], [], IO_PERIOD_S)
            now_real = time.monotonic()
            try:
                with self.lock:
                    self.clock.tick()
                    self._service_uarts(now_real - last_io)
                    self._service_pins()
                    self._step_fans(self.clock.now())
                    if self.clock.now() - self._last_physics >= PHYSICS_PERIOD_S:
                        self._physics()
            except Exception:
                log.exception("simulator step failed")
            last_io = now_real
            self.cpu_s = time.thread_time() - started_cpu

    # -- the UARTs ---------------------------------------------------------------------

    def _service_uarts(self, real_dt_s: float) -> None:
        for slot in self.slots:
            line, module = slot.line, slot.module
            data = line.read()
            if module is None:
                continue
            chain = module.chain
            in_step = line.host_baud() == chain.baud
            if data and in_step:
                chain.receive(data)
            budget = line.budget(real_dt_s, chain.baud, sending=bool(chain.pending_output))
            if budget and chain.pending_output:
                out = chain.take_output(budget)
                line.write(out if in_step else line.garbage(len(out)))

    # -- pins --------------------------------------------------------------------------

    @staticmethod
    def _pin_high(pin: Any, *, undriven: bool) -> bool:
        if pin.function != "output":
            return undriven
        return bool(pin.state)

    @staticmethod
    def _drive(pin: Any, level: bool) -> None:
        pin.hold(level)

    def _service_pins(self) -> None:
        now = self.clock.now()
        for slot in self.slots:
            bounce = slot.bounce
            if bounce is None:
                # Pulled up when empty, grounded by a module.
                self._drive(slot.presence_pin, slot.module is None)
            else:
                while bounce.levels and bounce.next_s <= now + EPSILON_S:
                    self._drive(slot.presence_pin, bounce.levels.pop(0))
                    bounce.next_s += BOUNCE_LEVEL_S
                if not bounce.levels:
                    slot.bounce = None
            # Board pull-downs: an undriven enable is off, an undriven reset holds reset.
            slot.hotswap.enable_pin = self._pin_high(slot.power_pin, undriven=False)
            self._drive_alert(slot)  # a module pulled or seated moves the line too
        for watch in self.watches:
            crossed = watch.crossed_at is not None and watch.cut_at is None
            if crossed and not self.slots[watch.slot].hotswap.enable_pin:
                watch.cut_at = time.monotonic()

    def _drive_alert(self, slot: SimSlot) -> None:
        """Move the slot's alert line to what its module's sensors say, if it changed."""
        if slot.alert_pin is None or slot.alert_pin.function != "input":
            return
        low = slot.module is not None and any(s.pulls_os_low for s in slot.module.sensors)
        if low != slot.alert_low:
            slot.alert_low = low
            self.irq.drive(slot.alert_pin, not low, after=self._stamp_cuts)

    def _stamp_cuts(self) -> None:
        """Right after an alert edge's host callbacks ran: did they drop an enable line?"""
        for watch in self.watches:
            pin = self.slots[watch.slot].power_pin
            dropped = pin.function != "output" or not pin.state
            if watch.crossed_at is not None and watch.cut_at is None and dropped:
                watch.cut_at = time.monotonic()

    def _check_watches(self) -> None:
        for watch in self.watches:
            module = self.slots[watch.slot].module
            if (
                watch.crossed_at is None
                and module is not None
                and max(sensor.shown_c() for sensor in module.sensors) >= watch.threshold_c
            ):
                watch.crossed_at = time.monotonic()

    def watch_cutoff(self, index: int, threshold_c: float) -> CutoffWatch:
        """Record when slot `index` crosses `threshold_c` and when its power goes off."""
        watch = CutoffWatch(self._slot(index).index, threshold_c)
        with self.lock:
            self.watches.append(watch)
        return watch

    # -- physics -----------------------------------------------------------------------

    def _step_fans(self, now: float) -> None:
        """Fans turn (and pulse their tachometers) every I/O tick, not only every physics
        step: a real tach line pulses continuously, and bursts would make RPM readings
        jump by the burst size."""
        dt = now - self._last_fans
        if dt > 0:
            self._last_fans = now
            if self.fan_controller is not None:
                self.fan_controller.step()  # its watchdog may take the drives to full
            for fan in self.fans:
                fan.step(dt)

    def _physics(self) -> None:
        now = self.clock.now()
        dt = now - self._last_physics
        self._last_physics = now
        if dt <= 0:
            return
        self._step_fans(now)
        airflow = sum(f.airflow for f in self.fans) / len(self.fans)
        with self.i2c.lock:
            self.psu.step(dt)
            bus_v = self.psu.vout_v
            drawn_w = 0.0
            for slot in self.slots:
                drawn_w += self._slot_physics(slot, dt, bus_v, airflow)
            self._check_watches()
            fans_w = sum(FAN_POWER_MAX_W * (f.rpm / f.rpm_max) ** 3 for f in self.fans)
            self.psu.pout_w = drawn_w + fans_w + CONTROLLER_W
            self.psu.temp_c = self.ambient_c + 8.0 + self.psu.pout_w / 400.0
            self.psu.fan_rpm = 4000.0 + self.psu.pout_w
            self.psu.step(0.0)
        self._play_scenario(now)

    def _slot_physics(self, slot: SimSlot, dt: float, bus_v: float, airflow: float) -> float:
        hotswap, module = slot.hotswap, slot.module
        hotswap.vin_v = bus_v
        hotswap.temp_c = self.ambient_c + 10.0 + hotswap.iout_a * 0.5
        if module is None:
            hotswap.load_w = 0.0
            hotswap.step(dt)
            return hotswap.pin_w
        # The rail first (with the load of the step before), then what hangs on it: a
        # converter sees its input in the step the hot-swap brings it up, not one later.
        hotswap.step(dt)
        module.dcdc.vin_v = hotswap.vout_v
        module.dcdc.step(dt)
        reset_released = self._pin_high(slot.reset_pin, undriven=False)
        module.step(dt, airflow=airflow, ambient_c=self.ambient_c, reset_released=reset_released)
        for sensor in module.sensors:
            sensor.convert()
        self._drive_alert(slot)
        hotswap.load_w = module.input_w()
        return hotswap.pin_w

    # -- modules -----------------------------------------------------------------------

    def _new_module(self) -> SimModule:
        self._serials += 1
        serial = f"HB{self.config.sim.seed % 100:02d}{self._serials:05d}"
        sensors = max(len(s.temp_addresses) for s in self.config.slot)
        return SimModule(
            self.module_spec, serial, self.rng, sensors=sensors, ambient_c=self.ambient_c
        )

    def _seat(self, slot: SimSlot, module: SimModule, *, bounce: bool) -> None:
        cfg = slot.config
        module.dcdc.address = cfg.dcdc_address
        self.i2c.attach(cfg.eeprom_address, module.eeprom)
        for address, sensor in zip(cfg.temp_addresses, module.sensors, strict=False):
            self.i2c.attach(address, sensor)
        self.i2c.attach(cfg.dcdc_address, module.dcdc)
        slot.module = module
        slot.shelf = None
        if bounce:
            slot.bounce = Bounce(self._bounce_levels(final=False), self.clock.now())

    def _bounce_levels(self, *, final: bool) -> list[bool]:
        levels = []
        for _ in range(BOUNCES):
            levels += [not final, final] * self.rng.randint(1, 2)
        return [*levels, final]

    def insert_module(self, index: int, *, new: bool = False, from_slot: int | None = None) -> str:
        """Seat a module (the one last pulled from this slot, or from `from_slot`, unless
        `new`); its serial."""
        with self.lock:
            slot = self._slot(index)
            if slot.module is not None:
                raise ValueError(f"slot {index} already holds module {slot.module.serial}")
            if from_slot is not None:  # moved by hand from another slot
                source = self._slot(from_slot)
                slot.shelf, source.shelf = source.shelf, None
            module = slot.shelf if slot.shelf is not None and not new else self._new_module()
            self._seat(slot, module, bounce=True)
            self._note(f"insert {index} ({module.serial})")
            return module.serial

    def pull_module(self, index: int) -> str:
        """Pull a module out live, powered or not; its serial."""
        with self.lock:
            slot = self._slot(index)
            module = slot.module
            if module is None:
                raise ValueError(f"slot {index} is empty")
            cfg = slot.config
            for address in (cfg.eeprom_address, cfg.dcdc_address, *cfg.temp_addresses):
                self.i2c.detach(address)
            module.dcdc.vin_v = 0.0
            module.dcdc.step(0.0)
            module.chain.set_powered(False)
            slot.module = None
            slot.shelf = module
            slot.bounce = Bounce(self._bounce_levels(final=True), self.clock.now())
            self._note(f"pull {index} ({module.serial})")
            return module.serial

    def _slot(self, index: int) -> SimSlot:
        if not 0 <= index < len(self.slots):
            raise ValueError(f"no slot {index} (this rig has {len(self.slots)})")
        return self.slots[index]

    def _module(self, index: int) -> SimModule:
        module = self._slot(index).module
        if module is None:
            raise ValueError(f"slot {index} is empty")
        return module

    # -- faults ------------------------------------------------------------------------

    def apply(self, command: FaultCommand) -> None:
        with self.lock:
            command.apply(self)
            self._note(str(command))

    def _note(self, what: str) -> None:
        self.applied.append((self.clock.now(), what))
        log.info("sim fault", what=what, sim_time_s=round(self.clock.now(), 1))

    def _play_scenario(self, now: float) -> None:
        while self.scenario and self.scenario[0].at_s <= now + EPSILON_S:
            due = self.scenario.pop(0)
            try:
                self.apply(due.command)
            except ValueError as exc:
                log.warning("scenario fault not applied", fault=str(due.command), error=str(exc))

    def _chip(self, index: int, chip: int) -> Any:
        chips = self._module(index).chain.chips
        if chip >= len(chips):
            raise ValueError(f"slot {index} has {len(chips)} chips, no chip {chip}")
        return chips[chip]

    def chip_dead(self, index: int, chip: int) -> None:
        self._chip(index, chip).dead = True

    def chip_degrade(self, index: int, chip: int, per_hour: float) -> None:
        self._chip(index, chip).degradation_per_s = per_hour / 3600.0

    def chip_ok(self, index: int, chip: int) -> None:
        target = self._chip(index, chip)
        target.dead = False
        target.degradation = 0.0
        target.degradation_per_s = 0.0

    def fan_stall(self, fan: int) -> None:
        self._fan(fan).stall()

    def fan_ok(self, fan: int) -> None:
        self._fan(fan).unstall()

    def _fan(self, fan: int) -> SimFan:
        if not 0 <= fan < len(self.fans):
            raise ValueError(f"no fan {fan} (this rig has {len(self.fans)})")
        return self.fans[fan]

    def sensor_fault(self, index: int, sensor: int, kind: str) -> None:
        sensors = self._module(index).sensors
        if sensor >= len(sensors):
            raise ValueError(f"slot {index} has {len(sensors)} sensors, no sensor {sensor}")
        target = sensors[sensor]
        target.lost = kind == "lost"
        target.stuck = kind == "stuck"

    def dcdc_overcurrent(self, index: int) -> None:
        self._module(index).dcdc.inject_overcurrent()

    def hotswap_overcurrent(self, index: int) -> None:
        self._slot(index).hotswap.inject_overcurrent()

    def module_short(self, index: int) -> None:
        """The module's input shorts: its hot-swap controller trips whenever it turns on."""
        self._module(index).shorted = True

    def psu_input(self, volts: float) -> None:
        self.psu.vin_v = volts

    def uart_noise(self, index: int, bit_flip: float, drop: float) -> None:
        line = self._slot(index).line
        for noise in (line.noise_in, line.noise_out):
            noise.bit_flip, noise.drop = bit_flip, drop

    def i2c_errors(self, rate: float, address: int | None) -> None:
        self.i2c.set_error_rate(rate, address)

    def pmbus_addresses(self) -> list[int]:
        """The PSU's, every hot-swap controller's and every DC-DC's address."""
        return [
            self.psu.address,
            *(s.config.hotswap_address for s in self.slots),
            *(s.config.dcdc_address for s in self.slots),
        ]

    def pec_errors(self, rate: float, address: int | None) -> None:
        """Reads from PMBus devices (one, or all) arrive with a flipped bit this often: on
        the wire, so the PEC the part appended no longer matches."""
        for target in self.pmbus_addresses() if address is None else [address]:
            self.i2c.set_bit_flip_rate(rate, target)

    def i2c_stuck(self, seconds: float) -> None:
        """A device holds the bus for this many real seconds (the adapter's own timeout
        is in real time): transactions block, then fail with ETIMEDOUT."""
        self.i2c.hang(seconds)

    def i2c_ok(self) -> None:
        self.i2c.clear_faults()

    def eeprom_fault(self, index: int, kind: str) -> None:
        """The identity EEPROM of the module in slot `index`: a damaged byte (its CRC no
        longer matches), blank (erased), silent (no ACK), or healed."""
        eeprom = self._module(index).eeprom
        if kind == "corrupt":
            eeprom.memory[30] ^= 0x5A  # inside the serial number
        elif kind == "blank":
            eeprom.memory[:] = b"\xff" * len(eeprom.memory)
        eeprom.lost = kind == "silent"
        if kind == "ok":
            eeprom.memory[:] = eeprom.programmed

    def device_silent(self, address: int, silent: bool) -> None:
        """The device at `address` stops answering (NACKs), or answers again."""
        device = self.i2c.device(address)
        if device is None or not hasattr(device, "lost"):
            raise ValueError(f"no device that can fall silent at 0x{address:02x}")
        device.lost = silent

    def overheat(self, index: int, c_per_s: float) -> None:
        """Heat a board this many °C per simulated second beyond its physics (0 ends it)."""
        self._module(index).heat_c_per_s = c_per_s

    def set_ambient(self, celsius: float) -> None:
        self.ambient_c = celsius

    # -- what a technician (or a test) can see -------------------------------------------

    def cpu_accounting(self) -> dict[str, float]:
        """CPU seconds that cross the host/simulator line, for honest benchmarks: the
        simulator's own thread, its device models run on the host's threads, and the host's
        pin callbacks run on the simulator's thread."""
        return {
            "sim_thread_s": round(self.cpu_s, 4),
            "device_models_on_host_threads_s": round(self.i2c.cpu_on_host_threads_s, 4),
            "host_callbacks_on_sim_thread_s": round(
                sum(fan.host_callbacks_cpu_s for fan in self.fans), 4
            ),
        }

    def status(self) -> dict[str, Any]:
        with self.lock:
            slots = []
            for slot in self.slots:
                module = slot.module
                entry: dict[str, Any] = {"slot": slot.index, "module": None}
                entry["hotswap_on"] = slot.hotswap.on
                if module is not None:
                    entry["module"] = module.serial
                    entry["board_v"] = round(module.board_v, 3)
                    entry["power_w"] = round(module.power_w, 1)
                    entry["temp_c"] = round(module.temp_c, 1)
                    entry["chain_powered"] = module.chain.powered
                    entry["hashrate_ths"] = round(
                        sum(module.chain.hashrate_hs(c) for c in module.chain.chips) / 1e12, 2
                    )
                slots.append(entry)
            # Every fan stopped is silence, -inf dB(A): not a number JSON can carry.
            noise_dba = physics.combine_dba(f.noise_dba for f in self.fans)
            return {
                "cpu": self.cpu_accounting(),
                "sim_time_s": round(self.clock.now(), 1),
                "sim_lag_s": round(self.clock.lost_s, 1),
                "psu_pin_w": round(self.psu.pin_w, 1),
                "psu_vin_v": self.psu.vin_v,
                "ambient_c": self.ambient_c,
                "noise_dba": round(noise_dba, 1) if math.isfinite(noise_dba) else None,
                "fans_rpm": [round(f.rpm) for f in self.fans],
                "slots": slots,
            }
