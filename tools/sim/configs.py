"""The packaged simulated rig as an agent run in-process sees it (tests and benchmarks).

Directories under a scratch folder, the simulator's control socket off, and no MQTT or
miner API unless the caller turns them on: such agents run side by side on one machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hashbay.agent.daemon.config import Config, default_config_path, load_config


def in_process_config(
    scratch: Path,
    *,
    chips: int,
    chips_per_domain: int = 1,
    modules: tuple[int, ...] = (0, 1, 2),
    time_scale: float = 1.0,
) -> Config:
    config = load_config(default_config_path())
    config = config.with_dirs(str(scratch / "state"), str(scratch / "run"))
    for directory in (config.agent.state_dir, config.agent.runtime_dir):
        Path(directory).mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(
        config,
        sim=dataclasses.replace(
            config.sim,
            chips_per_board=chips,
            chips_per_domain=chips_per_domain,
            modules=modules,
            control_socket=False,
            time_scale=time_scale,
        ),
        mqtt=dataclasses.replace(config.mqtt, enabled=False),
        api=dataclasses.replace(config.api, enabled=False),
    )


GPIO_FAN_PINS = ((12, 16), (13, 20), (18, 21), (19, 26))
"""PWM and tachometer pins of the four fans when they hang on GPIO (the reference board's
other wiring, README "Hardware wiring"); they take the pins the alert lines use."""


def with_gpio_fans(config: Config) -> Config:
    """The same rig with its fans on GPIO pins instead of the fan controller (and, since
    those pins are then taken, without the slots' alert lines)."""
    fans = tuple(
        dataclasses.replace(fan, channel=None, pwm_pin=pwm, tach_pin=tach)
        for fan, (pwm, tach) in zip(config.fan, GPIO_FAN_PINS, strict=True)
    )
    slots = tuple(dataclasses.replace(slot, alert_pin=None) for slot in config.slot)
    hardware = dataclasses.replace(config.hardware, fan_backend="gpio")
    return dataclasses.replace(config, fan=fans, slot=slots, hardware=hardware)
