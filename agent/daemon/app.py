"""Wires the agent together: buses, rig, slot controllers, publishers, supervisor, signals."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import structlog

from hashbay.agent.core.alarms import AlarmGate
from hashbay.agent.core.events import Event, EventBus, EventKind
from hashbay.agent.core.state import AgentState
from hashbay.agent.daemon.config import Config
from hashbay.agent.daemon.console import run_console
from hashbay.agent.daemon.liveness import Liveness, StallGuard, heartbeat, watchdog_pings
from hashbay.agent.daemon.logsetup import RecentEvents
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.daemon.supervisor import EXIT_SOFTWARE, Policy, Service, Supervisor
from hashbay.agent.hardware.bus_backends import Buses
from hashbay.agent.hardware.buses import open_buses
from hashbay.agent.hardware.poller import announce_ready, poll_hardware
from hashbay.agent.hardware.rig import Rig
from hashbay.agent.interfaces.control_socket import ControlServer, chip_rows
from hashbay.agent.interfaces.dispatch import Dispatcher
from hashbay.agent.interfaces.metrics import AgentCollector, MetricsServer, chip_reader
from hashbay.agent.interfaces.miner_api import MinerApiServer, device_counters
from hashbay.agent.interfaces.miner_api_replies import PoolView
from hashbay.agent.interfaces.mqtt import MqttPublisher
from hashbay.agent.interfaces.pool_commands import PoolCommands
from hashbay.agent.interfaces.spool import EventSpool
from hashbay.agent.mining.pool_list_store import PoolListStore
from hashbay.agent.mining.pool_work import PoolWork
from hashbay.agent.mining.pools import PoolManager, pool_views
from hashbay.agent.mining.work import LocalWork, WorkSource
from hashbay.agent.modules.health import HealthModel
from hashbay.agent.modules.predict_store import PredictorBook, PredictStore
from hashbay.agent.modules.slot_services import PowerBudget, Services, SlotSettings, Tuning
from hashbay.agent.modules.slots import SlotController
from hashbay.agent.modules.sweep import SensorSweep
from hashbay.agent.power.controls import ControlStore
from hashbay.agent.power.governor import Governor
from hashbay.agent.power.power_service import PowerService
from hashbay.agent.thermal.thermal import build_thermal
from hashbay.agent.tuning.tune_store import TuneStore
from hashbay.drivers.eeprom import BoardIdentity

log = structlog.get_logger("hashbay.app")

RigFactory = Callable[[Config, Buses], Rig]


def slot_settings(config: Config) -> SlotSettings:
    chain = config.chain
    return SlotSettings(
        ticket_difficulty=chain.ticket_difficulty,
        ramp_step_mhz=chain.ramp_step_mhz,
        ramp_step_delay_s=chain.ramp_step_delay_s,
        job_interval_s=chain.job_interval_s,
        chip_poll_interval_s=chain.chip_poll_interval_s,
        sample_interval_s=chain.sample_interval_s,
        fast_baud=chain.fast_baud,
        power_good_timeout_s=chain.power_good_timeout_s,
        nonce_check_bits=config.hardware.nonce_check_bits,
    )


class Agent:
    """Everything that runs, built from a config; `run` returns the exit code."""

    def __init__(
        self,
        config: Config,
        *,
        notifier: SystemdNotifier,
        live: TextIO | None = None,
        recent: RecentEvents | None = None,
        rig_factory: RigFactory = Rig,
        work: WorkSource | None = None,
    ) -> None:
        self.config = config
        self.notifier = notifier
        self.rig = rig_factory(config, open_buses(config))
        self.state = AgentState(config.agent.name)
        self.liveness = Liveness(config.agent.stall_timeout_s, bus=self.rig.progress)
        self.spool = EventSpool(
            Path(config.agent.state_dir) / "events.db", config.mqtt.spool_max_events
        )
        self.events = EventBus(self.spool)
        self.alarms = AlarmGate(self.events, self.rig.clock, config.alarms.repeat_s)
        self.spool.report_to(self._state_dropped("event spool"))
        self.budget = PowerBudget(self.rig.envelope.psu_power_max_w)
        self.mqtt_wake = asyncio.Event()
        self.controls = ControlStore(Path(config.agent.state_dir) / "controls.json")
        for problem in self.controls.problems:
            self._state_dropped("controls")(problem)
        self.sweep = SensorSweep(
            self.rig.call,
            config.protection.check_interval_s,
            backup_interval_s=config.protection.backup_interval_s,
        )
        self.controllers: list[SlotController] = []
        self.thermal = build_thermal(
            config,
            self.rig,
            lambda: [c.status for c in self.controllers],
            on_change=self.mqtt_wake.set,
        )
        self.thermal.follow_controls(self.controls.current)
        self.controls.on_change(self.thermal.follow_controls)
        self.pools: PoolManager | None = None
        self.pool_list = PoolListStore(
            Path(config.agent.state_dir) / "pools.json", config.pool, config.stratum
        )
        for problem in self.pool_list.problems:
            self._state_dropped("pools")(problem)
        if work is None and self.pool_list.current:
            work, self.pools = self._pool_work()
        self.work: WorkSource = work or LocalWork()
        self.power = PowerService(
            Governor(config.power, config.economics, self.rig.envelope),
            self.controls,
            self.state,
            self.controllers,
            self.events,
            clock=self.rig.clock,
            quiet_scale=self.thermal.power_scale,
            work_available=lambda: self.work.available,
        )
        if self.pools is not None:  # pools coming and going wake the governor, now it exists
            self.pools.work.on_availability = lambda available: self.power.wake()
        self.predictions = PredictorBook(config.predict, PredictStore(Path(config.agent.state_dir)))
        services = Services(
            call=self.rig.call,
            envelope=self.rig.envelope,
            events=self.events,
            alarms=self.alarms,
            work=self.work,
            budget=self.budget,
            clock=self.rig.clock,
            fans_stalled=self.rig.fans_stalled,
            health=self._health_model,
            predictions=self.predictions,
            on_change=self.mqtt_wake.set,
            director=self.power,
            protection=config.protection,
            tuning=Tuning(config.autotune, TuneStore(Path(config.agent.state_dir))),
            sweep=self.sweep,
            alarm_settings=config.alarms,
        )
        settings = slot_settings(config)
        buses = self.rig.buses
        self.controllers.extend(
            SlotController(hw, partial(buses.open_uart, hw.index), settings, services)
            for hw in self.rig.slots
        )
        self.state.slot_statuses = lambda: [c.status for c in self.controllers]
        self.state.on_update = self.mqtt_wake.set
        self.state.extra["spool"] = lambda: {
            "pending": self.spool.pending_count,
            "dropped": self.spool.dropped,
        }
        self.state.extra["psu_bus"] = self._psu_bus
        self.state.extra["power"] = self.power.status_json
        self.state.extra["thermal"] = self.thermal.status_json
        if self.pools is not None:
            self.state.extra["pools"] = self.pools.status_json
            self.state.extra["work"] = self.pools.work_json
        self.state.noise_estimate = self.thermal.noise_dba
        self.dispatch = Dispatcher(
            self.controllers, self.controls, PoolCommands(self.pool_list, self.pools)
        )
        self.mqtt = MqttPublisher(
            config.mqtt,
            config.agent.name,
            len(self.controllers),
            self.spool,
            self.state.miner_json,
            self.state.slot_statuses,
            self.dispatch,
            wake=self.mqtt_wake,
        )
        self.control = ControlServer(
            config.control,
            Path(config.agent.runtime_dir) / config.control.socket,
            state=self.state,
            events=self.events,
            handle=self.dispatch,
            slots=len(self.controllers),
            chips=lambda n: chip_rows(self.controllers[n].chain),
        )
        self.api = MinerApiServer(
            config.api,
            state=self.state,
            handle=self.dispatch,
            slots=len(self.controllers),
            devices=lambda: [device_counters(c.chain) for c in self.controllers],
            pools=self._pool_views,
            governed=lambda: (
                self.power.mode().value,
                self.power.governor.target_w(self.power.controls.current),
            ),
            pool_list=lambda: self.pools.listed if self.pools is not None else (),
        )
        self.metrics = MetricsServer(
            config.metrics,
            AgentCollector(
                self.state,
                pools=self._pool_views,
                chips=chip_reader(lambda: [c.chain for c in self.controllers])
                if config.metrics.per_chip
                else None,
                mode=lambda: self.power.mode().value,
            ),
        )
        self.supervisor = Supervisor(
            self._services(live, recent),
            self.rig.safe_state,
            notifier,
            shutdown_timeout_s=config.agent.shutdown_timeout_s,
        )

    def _pool_work(self) -> tuple[PoolWork, PoolManager]:
        """Mining on pools: the list in force (sent from afar, else the config's)."""
        config = self.config
        pool_work = PoolWork()
        manager = PoolManager(
            self.pool_list.current,
            config.stratum,
            pool_work,
            on_change=self.mqtt_wake.set,
            hashrate=self._nominal_hashrate,
            alarms=self.alarms,
        )
        pool_work.on_fresh = self._fresh_work
        return pool_work, manager

    def _nominal_hashrate(self) -> float:
        """What the boards should hash at their clocks (H/s): Stratum V2 tells the pool."""
        statuses = (controller.status for controller in self.controllers)
        return sum(s.health.expected_hs for s in statuses if s.health is not None)

    def _state_dropped(self, file: str) -> Callable[[str], None]:
        """Raises the event for a damaged entry of a state file (it was already logged)."""

        def report(problem: str) -> None:
            self.events.publish(
                Event(EventKind.STATE_DROPPED, None, f"{file}: {problem}", details={"file": file})
            )

        return report

    def _psu_bus(self) -> dict[str, int]:
        """The PSU's failed transactions by kind (the slots' devices are in their status)."""
        counts = self.rig.buses.i2c.errors.counts(self.config.hardware.psu_address)
        return {
            "nacks": counts.nacks,
            "pec_errors": counts.pec_errors,
            "timeouts": counts.timeouts,
            "bus_errors": counts.bus_errors,
        }

    def _fresh_work(self) -> None:
        """clean_jobs or a new pool: every hashing slot sends new work now."""
        for controller in self.controllers:
            controller.nudge()

    def _pool_views(self) -> list[PoolView]:
        return pool_views(self.pools.status()) if self.pools is not None else []

    def _health_model(self, identity: BoardIdentity) -> HealthModel:
        return HealthModel(
            self.config.health,
            identity.chip_count,
            board_v_target=identity.nominal_vout_mv / 1000,
        )

    def _services(self, live: TextIO | None, recent: RecentEvents | None) -> list[Service]:
        config = self.config

        def poll() -> Coroutine[Any, Any, None]:
            return poll_hardware(
                self.rig, self.state, self.liveness, self.notifier, config.agent.poll_interval_s
            )

        services = [
            Service("hardware-poll", poll, Policy.CRITICAL, "without it no fan or PSU is watched"),
            Service(
                "heartbeat", lambda: heartbeat(self.liveness), Policy.CRITICAL, "proves the loop"
            ),
            Service(
                "watchdog",
                lambda: watchdog_pings(self.liveness, self.notifier),
                Policy.RESTART,
                "a missed ping only risks a restart by systemd",
            ),
            Service(
                "ready",
                lambda: announce_ready(self.state, self.notifier),
                Policy.RESTART,
                "one-shot notice",
            ),
        ]
        services.append(
            Service(
                "thermal",
                self.thermal.run,
                Policy.RESTART,
                "a failed loop first puts the fans at the safe duty (full speed), which keeps "
                "every board cool while it restarts",
            )
        )
        services.append(
            Service(
                "protection",
                self.sweep.run,
                Policy.CRITICAL,
                "without it no board's temperature is watched: safe state",
            )
        )
        services.append(
            Service(
                "alarms",
                self.alarms.run,
                Policy.RESTART,
                "folded alarm events wait in memory; the next interval tells them",
            )
        )
        services.append(
            Service(
                "power",
                self.power.run,
                Policy.RESTART,
                "budgets stay as last decided; the envelope still bounds every board",
            )
        )
        if self.pools is not None:
            services.append(
                Service(
                    "pools",
                    self.pools.run,
                    Policy.RESTART,
                    "the chips keep their last work; shares resume once a pool is back",
                )
            )
        for controller in self.controllers:
            services.append(
                Service(
                    f"slot-{controller.index}",
                    self._slot_runner(controller),
                    Policy.RESTART,
                    "its module is powered off first; the other slots keep hashing",
                )
            )
        if config.mqtt.enabled:
            services.append(
                Service("mqtt", self.mqtt.run, Policy.RESTART, "events wait in the spool")
            )
        if config.control.enabled:
            services.append(
                Service("control", self.control.run, Policy.RESTART, "technicians reconnect")
            )
        if config.api.enabled:
            services.append(
                Service("miner-api", self.api.run, Policy.RESTART, "fleet tools poll again")
            )
        if config.metrics.enabled:
            services.append(
                Service("metrics", self.metrics.run, Policy.RESTART, "Prometheus scrapes again")
            )
        if live is not None:
            events = recent or RecentEvents()
            services.append(
                Service(
                    "console",
                    lambda: run_console(self.state, events, live),
                    Policy.RESTART,
                    "display only",
                )
            )
        return services

    def _slot_runner(self, controller: SlotController) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            try:
                await controller.run()
            except Exception:
                controller.hw.safe()  # never leave a module powered by a crashed controller
                raise

        return run

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.rig.bind_loop(loop)
        for controller in self.controllers:
            self.rig.on_presence_edge(controller.index, controller.presence_edge)
            self.rig.on_alert(controller.index, controller.alert_tripped)

        def on_stall(reason: str) -> None:
            self.rig.safe_state()
            self.supervisor.request_stop_threadsafe(f"stall: {reason}", EXIT_SOFTWARE)

        guard = StallGuard(self.liveness, on_stall)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(
                signum, self.supervisor.request_stop, signal.Signals(signum).name
            )
        guard.start()
        try:
            return await self.supervisor.run()
        finally:
            guard.stop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            self.rig.safe_state()
            self.rig.close()
            self.spool.close()
            self.notifier.close()


async def run_agent(
    config: Config,
    *,
    notifier: SystemdNotifier,
    live: TextIO | None = None,
    recent: RecentEvents | None = None,
    rig_factory: RigFactory = Rig,
) -> int:
    """Run until SIGTERM/SIGINT or a critical failure; returns the exit code."""
    agent = Agent(config, notifier=notifier, live=live, recent=recent, rig_factory=rig_factory)
    return await agent.run()
