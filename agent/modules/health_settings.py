"""Settings of module health (`health`): what counts as a healthy module.

Declared apart from the service so the config assembles it without importing the
service (`config` imports settings, never services)."""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.core.settings import setting
from hashbay.drivers.errors import ConfigError

CHIP_FAULT_ERROR_RATE = 0.30
"""A chip erring on this share of its nonces has failed: shared with the predictor."""


@dataclass(frozen=True, kw_only=True)
class HealthSettings:
    """What counts as healthy. Defaults suit a 126-chip S21-class board polled at 1 Hz."""

    window_s: float = setting(
        600.0,
        "Rates (hashrate, error rates) are measured over this much recent time: long "
        "enough for ~340 nonces per chip at 490 MHz, short enough to notice within minutes.",
        unit="s",
        min=30,
        max=86400,
    )
    window_slices: int = setting(
        20,
        "The window moves in this many steps; more is smoother, each costs a snapshot.",
        min=2,
        max=600,
    )
    min_rate_nonces: int = setting(
        50,
        "Nonces a chip must have reported in the window before its error rate is believed "
        "(a 30 % rate over 50 nonces is off by at most ±20 % at 3 sigma).",
        min=1,
        max=100000,
    )
    hashrate_deficit_start: float = setting(
        0.05,
        "Hashrate this far below expected (a share; beyond the Poisson noise of the window) "
        "starts costing points.",
        min=0,
        max=1,
    )
    hashrate_penalty_per_pct: float = setting(
        1.5,
        "Points per percent of hashrate shortfall beyond the start (25 % short costs 30).",
        min=0,
        max=100,
    )
    hashrate_penalty_max: float = setting(
        60.0, "Most points a hashrate shortfall alone can cost.", min=0, max=100
    )
    module_error_start: float = setting(
        0.005,
        "Share of the module's nonces failing verification that starts costing points; "
        "sound chips at stock clocks err on about one in a million.",
        min=0,
        max=1,
    )
    module_error_penalty_per_pct: float = setting(
        4.0, "Points per percent of module hardware errors beyond the start.", min=0, max=100
    )
    module_error_penalty_max: float = setting(
        40.0, "Most points module-wide hardware errors can cost.", min=0, max=100
    )
    chip_error_warn: float = setting(
        0.05,
        "A chip erring on this share of its nonces is named as a reason.",
        min=0,
        max=1,
    )
    chip_error_penalty_each: float = setting(
        10.0,
        "Points one erring chip costs as its rate approaches the chip fault rate.",
        min=0,
        max=100,
    )
    chip_error_penalty_max: float = setting(
        40.0, "Most points erring chips together can cost.", min=0, max=100
    )
    chip_fault_error_rate: float = setting(
        CHIP_FAULT_ERROR_RATE,
        "A chip erring on this share of its nonces (with at least min_rate_nonces) is a "
        "failed chip: the module faults and should be swapped.",
        min=0.01,
        max=1,
    )
    silent_after_nonces: float = setting(
        30.0,
        "A chip that reported nothing while its peers averaged this many nonces has stopped "
        "hashing (a Poisson process with mean 30 is silent once in 10^13 tries).",
        min=5,
        max=100000,
    )
    missing_penalty_per_pct: float = setting(
        4.0, "Points per percent of chips not answering.", min=0, max=100
    )
    missing_penalty_max: float = setting(
        60.0, "Most points missing chips can cost.", min=0, max=100
    )
    missing_fault_share: float = setting(
        0.10,
        "This share of chips not answering is a fault: the chain is breaking up.",
        min=0,
        max=1,
    )
    missing_confirm_polls: int = setting(
        2,
        "A chip the driver reports not answering counts as missing once it has missed this "
        "many polls in a row: one late reply (a busy UART) is not a chain breaking up.",
        min=1,
        max=100,
    )
    chip_timeouts_warn: int = setting(
        3,
        "A chip that still hashes but missed this many polls in the window is named as flaky.",
        min=1,
        max=100000,
    )
    chip_timeout_penalty_each: float = setting(1.0, "Points each flaky chip costs.", min=0, max=100)
    chip_timeout_penalty_max: float = setting(
        10.0, "Most points flaky chips can cost.", min=0, max=100
    )
    temp_warn_c: float = setting(
        85.0,
        "Board temperature (hottest usable sensor) that starts costing points; the board "
        "runs at 60-70 °C with healthy fans.",
        unit="°C",
        min=0,
        max=150,
    )
    temp_fault_c: float = setting(
        95.0,
        "Board temperature that is a fault: junctions run 5-11 °C hotter still.",
        unit="°C",
        min=0,
        max=150,
    )
    temp_penalty_per_c: float = setting(3.0, "Points per degree above temp_warn_c.", min=0, max=100)
    temp_penalty_max: float = setting(40.0, "Most points heat can cost.", min=0, max=100)
    sensor_lost_after_s: float = setting(
        10.0,
        "A temperature sensor unreadable this long is a reason (a single missed read is "
        "bus noise).",
        unit="s",
        min=0,
        max=3600,
    )
    sensor_penalty: float = setting(
        10.0, "Points each unreadable or stuck sensor costs.", min=0, max=100
    )
    blind_fault_after_s: float = setting(
        30.0,
        "No usable temperature sensor for this long is a fault: overheating would go unseen.",
        unit="s",
        min=0,
        max=3600,
    )
    stuck_after_s: float = setting(
        120.0,
        "A reading unchanged to the last bit this long, while the board's power or its other "
        "sensors moved, is a stuck sensor.",
        unit="s",
        min=1,
        max=86400,
    )
    stuck_power_change: float = setting(
        0.10,
        "Change of board power (a share) that must move a live sensor: 10 % of a 1.3 kW "
        "board is about 4 °C.",
        min=0.01,
        max=10,
    )
    stuck_settle_s: float = setting(
        60.0,
        "Time after such a power change in which a live sensor must have moved (the board's "
        "thermal time constant is about 46 s).",
        unit="s",
        min=0,
        max=3600,
    )
    stuck_others_moved_c: float = setting(
        2.0,
        "Movement of the board's other sensors that must move a live sensor too.",
        unit="°C",
        min=0.1,
        max=100,
    )
    rail_tolerance: float = setting(
        0.03,
        "Board rail voltage this far (a share) from its target starts costing points.",
        min=0,
        max=1,
    )
    rail_penalty_per_pct: float = setting(
        5.0, "Points per percent of rail deviation beyond the tolerance.", min=0, max=100
    )
    rail_penalty_max: float = setting(
        40.0, "Most points the rail voltage can cost.", min=0, max=100
    )
    rail_unreadable_after_s: float = setting(
        10.0, "Rail telemetry unreadable this long is a reason.", unit="s", min=0, max=3600
    )
    rail_unreadable_penalty: float = setting(
        5.0, "Points unreadable rail telemetry costs.", min=0, max=100
    )
    dcdc_warn_c: float = setting(
        110.0,
        "DC-DC converter temperature that starts costing points (it latches its own "
        "over-temperature fault at about 125 °C).",
        unit="°C",
        min=0,
        max=200,
    )
    dcdc_penalty_per_c: float = setting(
        2.0, "Points per degree of DC-DC temperature above dcdc_warn_c.", min=0, max=100
    )
    dcdc_penalty_max: float = setting(30.0, "Most points DC-DC heat can cost.", min=0, max=100)
    bus_penalty_each: float = setting(
        10.0,
        "Points each noisy bus device of the module costs (see alarms.bus_error_share): a "
        "connector or part going bad, before it costs the board.",
        min=0,
        max=100,
    )
    bus_penalty_max: float = setting(
        20.0, "Most points noisy bus devices together can cost.", min=0, max=100
    )
    fan_penalty_each: float = setting(15.0, "Points each stalled fan costs.", min=0, max=100)
    fan_penalty_max: float = setting(45.0, "Most points stalled fans can cost.", min=0, max=100)
    degrading_penalty: float = setting(
        35.0,
        "Points a predictive warning (a chip expected to fail) costs, so the module ranks "
        "below healthy ones and shows DEGRADED while it still hashes.",
        min=0,
        max=100,
    )
    step_penalty_each: float = setting(
        5.0,
        "Points each chip costs whose error rate stepped up and stayed (a change, not aging).",
        min=0,
        max=100,
    )
    step_penalty_max: float = setting(
        15.0, "Most points stepped-up chips together can cost.", min=0, max=100
    )
    degraded_below: float = setting(70.0, "A score below this is DEGRADED.", min=0, max=100)
    recovered_at: float = setting(
        75.0,
        "A DEGRADED module is OK again only at this score: the gap keeps a score hovering "
        "near the threshold from flapping the slot's state.",
        min=0,
        max=100,
    )

    def __post_init__(self) -> None:
        if self.temp_warn_c >= self.temp_fault_c:
            raise ConfigError(
                f"health: temp_warn_c {self.temp_warn_c} must be below temp_fault_c "
                f"{self.temp_fault_c}, or heat would fault without warning first"
            )
        if self.recovered_at < self.degraded_below:
            raise ConfigError(
                f"health: recovered_at {self.recovered_at} must be at least degraded_below "
                f"{self.degraded_below}"
            )
        if self.chip_error_warn >= self.chip_fault_error_rate:
            raise ConfigError(
                f"health: chip_error_warn {self.chip_error_warn} must be below "
                f"chip_fault_error_rate {self.chip_fault_error_rate}"
            )
