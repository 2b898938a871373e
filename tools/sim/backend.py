"""The simulated rig as a bus back-end (`sim` in the config): pins, I2C and UART ptys of a
SimRig running in its own thread, on its own clock, and its fault-injection socket."""

from __future__ import annotations

from pathlib import Path

import structlog

from hashbay.agent.daemon.config import EMC2305, EMC2305_POLL_MAX_S, Config, site_caps
from hashbay.agent.hardware.bus_backends import Buses
from hashbay.drivers.errors import ConfigError
from hashbay.drivers.i2c import LockedI2C
from hashbay.tools.sim.control import SOCKET_NAME, ControlServer
from hashbay.tools.sim.module import ModuleSpec, module_identity
from hashbay.tools.sim.rig import SimRig

log = structlog.get_logger("hashbay.buses")


class Simulator:
    def check_config(self, config: Config, /) -> None:
        """The [sim] table must describe a rig the rest of the config can run."""
        sim = config.sim
        if sim.chips_per_board % sim.chips_per_domain:
            raise ConfigError(
                f"sim.chips_per_domain: {sim.chips_per_domain} does not divide "
                f"sim.chips_per_board ({sim.chips_per_board})"
            )
        _check_modules_fit(config)
        if len(set(sim.modules)) != len(sim.modules):
            raise ConfigError(f"sim.modules: a slot is listed twice in {list(sim.modules)}")
        for n, slot in enumerate(sim.modules):
            if slot >= len(config.slot):
                raise ConfigError(f"sim.modules[{n}]: there is no slot {slot}")
        simulated_poll_s = sim.time_scale * config.agent.poll_interval_s
        if config.hardware.fan_backend == EMC2305 and simulated_poll_s > EMC2305_POLL_MAX_S:
            raise ConfigError(
                f"sim.time_scale: {sim.time_scale:g} x agent.poll_interval_s makes "
                f"{simulated_poll_s:g} simulated seconds between polls; the simulated fan "
                f"controller's watchdog needs at most {EMC2305_POLL_MAX_S:g}"
            )
        if config.hardware.nonce_check_bits > sim.ticket_zero_bits:
            raise ConfigError(
                f"hardware.nonce_check_bits: {config.hardware.nonce_check_bits} is more than "
                f"the simulated chips deliver (sim.ticket_zero_bits = {sim.ticket_zero_bits}); "
                "every nonce would count as a hardware error"
            )

    def open(self, config: Config, /) -> Buses:
        """A started SimRig's buses, and its control socket if the config asks for one."""
        rig = SimRig(config)
        rig.start()
        buses = Buses(rig.pin_factory, LockedI2C(rig.i2c), tuple(rig.uart_paths), rig.now, rig)
        buses.resources.callback(rig.stop)
        if config.sim.control_socket:
            path = Path(config.agent.runtime_dir) / SOCKET_NAME
            try:
                control = ControlServer(rig, path)
            except OSError as exc:
                log.warning("simulator control socket unavailable", path=str(path), error=str(exc))
            else:
                buses.resources.callback(control.close)
        return buses


SIM = Simulator()


def _check_modules_fit(config: Config) -> None:
    """The simulated modules must be ones the site's limits admit, or every one faults."""
    sim = config.sim
    spec = ModuleSpec(sim.chip_model, sim.chips_per_board, sim.chips_per_domain, 1)
    declared = module_identity(spec).limits
    try:
        declared.within(site_caps(config))
    except ValueError:
        limits = config.limits
        raise ConfigError(
            f"sim.chips_per_domain: {sim.chips_per_board} chips in domains of "
            f"{sim.chips_per_domain} make a {declared.vout_min_v:.1f}-{declared.vout_max_v:.1f} V "
            f"module, outside limits.board_vout_min_v..max_v ({limits.board_vout_min_v:g}-"
            f"{limits.board_vout_max_v:g} V): every simulated module would be refused"
        ) from None
