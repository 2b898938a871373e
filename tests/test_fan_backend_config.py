"""Choosing the fan backend in the config: GPIO pins or a fan controller's channels, each
checked completely before any hardware is touched."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from hashbay.agent.daemon.config import default_config_path, parse_config
from hashbay.drivers.errors import ConfigError
from hashbay.tools.sim.configs import GPIO_FAN_PINS


def default_raw() -> dict[str, Any]:
    return tomllib.loads(default_config_path().read_text())


def controller_raw(address: int = 0x2F) -> dict[str, Any]:
    """The default rig: its four fans on channels 1-4 of an EMC2305."""
    raw = default_raw()
    raw["hardware"] |= {"fan_backend": "emc2305", "fan_controller_address": address}
    raw["fan"] = [{"channel": n} for n in (1, 2, 3, 4)]
    return raw


def gpio_raw() -> dict[str, Any]:
    """The default rig with its fans on GPIO pins instead (and no alert lines on them)."""
    raw = default_raw()
    raw["hardware"]["fan_backend"] = "gpio"
    raw["hardware"].pop("fan_controller_address", None)
    raw["fan"] = [{"pwm_pin": pwm, "tach_pin": tach} for pwm, tach in GPIO_FAN_PINS]
    for slot in raw["slot"]:
        slot.pop("alert_pin", None)
    return raw


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, "test.toml")
    return str(caught.value).removeprefix("test.toml: ")


def test_fans_on_gpio_need_their_pins_and_no_channel() -> None:
    config = parse_config(gpio_raw(), "test.toml")
    assert config.hardware.fan_backend == "gpio"
    assert [f.pins for f in config.fan] == [(12, 16), (13, 20), (18, 21), (19, 26)]
    assert all(f.channel is None for f in config.fan)


def test_the_packaged_rig_has_its_fans_on_a_controller_like_the_reference_board() -> None:
    config = parse_config(default_raw(), "test.toml")
    assert config.hardware.fan_backend == "emc2305"
    assert [f.channel for f in config.fan] == [1, 2, 3, 4]


def test_fans_on_a_controller_need_channels_and_no_pins() -> None:
    config = parse_config(controller_raw(), "test.toml")
    assert config.hardware.fan_backend == "emc2305"
    assert config.hardware.fan_controller_address == 0x2F
    assert [f.channel for f in config.fan] == [1, 2, 3, 4]
    assert all(f.pwm_pin is None and f.tach_pin is None for f in config.fan)


def test_a_gpio_fan_without_its_pins_or_with_a_channel_is_refused() -> None:
    raw = gpio_raw()
    del raw["fan"][1]["tach_pin"]
    assert refused(raw) == "fan[1].tach_pin: missing; hardware.fan_backend is 'gpio'"
    raw = gpio_raw()
    raw["fan"][0]["channel"] = 1
    assert refused(raw) == (
        "fan[0].channel: not used when hardware.fan_backend is 'gpio'; remove it"
    )


def test_a_controller_fan_without_a_channel_or_with_pins_is_refused() -> None:
    raw = controller_raw()
    del raw["fan"][2]["channel"]
    assert refused(raw) == "fan[2].channel: missing; hardware.fan_backend is 'emc2305'"
    raw = controller_raw()
    raw["fan"][0]["pwm_pin"] = 19  # a pin nothing else uses
    assert refused(raw) == (
        "fan[0].pwm_pin: not used when hardware.fan_backend is 'emc2305'; remove it"
    )


def test_channels_must_exist_and_not_be_shared() -> None:
    raw = controller_raw()
    raw["fan"][3]["channel"] = 2
    assert refused(raw) == "fan[3].channel: channel 2 is already fan[1]'s"
    raw = controller_raw()
    raw["fan"][0]["channel"] = 6
    assert refused(raw) == "fan[0].channel: must be an integer from 1 to 5, got 6"


def test_the_controller_address_must_be_a_strap_and_free() -> None:
    assert refused(controller_raw(0x30)) == (
        "hardware.fan_controller_address: 0x30 is not one an EMC2305 can be strapped to "
        "(0x2c, 0x2d, 0x2e, 0x2f, 0x4c, 0x4d)"
    )
    assert refused(controller_raw(0x4C)) == (
        "slot[2].temp_addresses[0]: I2C address 0x4c is already hardware.fan_controller_address"
    )
    raw = controller_raw()
    raw["hardware"]["psu_address"] = 0x2F
    assert refused(raw) == (
        "hardware.fan_controller_address: I2C address 0x2f is already hardware.psu_address"
    )


def test_the_controller_address_is_ignored_with_gpio_fans() -> None:
    raw = gpio_raw()
    raw["hardware"] |= {"psu_address": 0x2F, "fan_controller_address": 0x2F}
    assert parse_config(raw, "test.toml").hardware.fan_backend == "gpio"


def test_the_poll_must_beat_the_controllers_watchdog() -> None:
    raw = controller_raw()
    raw["agent"]["poll_interval_s"] = 3.0
    assert refused(raw).startswith(
        "agent.poll_interval_s: at most 2 s with the emc2305 fan backend"
    )
    raw = controller_raw()
    raw["sim"]["time_scale"] = 5.0
    assert refused(raw).startswith(
        "sim.time_scale: 5 x agent.poll_interval_s makes 5 simulated seconds between polls"
    )
    raw = gpio_raw()
    raw["agent"]["poll_interval_s"] = 3.0  # GPIO fans have no watchdog to beat
    assert parse_config(raw, "test.toml").agent.poll_interval_s == 3.0
