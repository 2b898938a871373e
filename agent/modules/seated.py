"""The module seated in a slot, from its identity to its pull.

Everything that belongs to one insertion lives here: a pull drops it in one step, so
nothing about a module can outlive it, and nothing can be asked of it before it is known.
"""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.modules.protection import BoardGuard, RestartPolicy
from hashbay.agent.modules.slot_services import HealthTracker, TrendTracker
from hashbay.agent.power.operating_point import PointPlanner
from hashbay.agent.tuning.tune_store import Loaded
from hashbay.drivers.bm13xx.chain import Bm13xxChain
from hashbay.drivers.bm13xx.registers import SMALL_CORES
from hashbay.drivers.eeprom import BoardIdentity
from hashbay.drivers.envelope import BoardLimits


@dataclass
class SeatedModule:
    identity: BoardIdentity
    planner: PointPlanner
    health: HealthTracker
    predictor: TrendTracker
    tune_wanted: bool = False  # no stored profile (or a stale one) and auto_tune is on
    # The board guard and its restart policy: made at the first power-up under protection,
    # kept across the module's own restarts (which identify it again), so restarts count.
    guard: BoardGuard | None = None
    restarts: RestartPolicy | None = None
    chain: Bm13xxChain | None = None  # while powered and enumerated

    @property
    def serial(self) -> str:
        return self.identity.serial


def planner_for(identity: BoardIdentity, limits: BoardLimits, loaded: Loaded) -> PointPlanner:
    """The module's operating points: from its identity, within the site's limits, on its
    stored tuning profile if it has one."""
    stored = loaded.stored
    return PointPlanner(
        limits,
        chip_count=identity.chip_count,
        nominal_v=identity.nominal_vout_mv / 1000,
        nominal_freq_mhz=identity.nominal_freq_mhz,
        hashes_per_mhz=hashes_per_mhz(identity),
        profile=stored.profile.points if stored is not None else (),
    )


def hashes_per_mhz(identity: BoardIdentity) -> float:
    return SMALL_CORES.get(identity.chip_model, 0) * 1e6
