"""Home Assistant MQTT discovery: what makes a miner and its slots appear in HA by themselves.

Pure functions: they return (topic, payload) pairs; the MQTT publisher sends them
retained at QoS 1 on every connect (HA re-reads retained configs when it restarts).

One HA device per miner and one per slot (`via_device` the miner). Device identifiers
are stable per miner name + slot number, never per module serial: a hot swap changes the
module, not the entities, and the serial shows in the slot's state attributes. Every
entity reads the retained state topic with a `value_template` and goes unavailable with
the miner's status topic.

The miner summary that `MqttPublisher` is given must carry the keys in `MINER_FIELDS`
(null when unknown); slot entities read `SlotStatus.to_json()`.

When to clear (empty retained payloads, `clear_messages`): when a miner is decommissioned
or renamed (its old entities would otherwise stay, unavailable, for ever), and for slots
the configuration no longer has — the publisher does the latter itself on every connect
for slot numbers from the configured count up to `MAX_SLOTS`. Nothing is cleared on a
normal shutdown: `offline` on the status topic is what tells HA the miner is gone for now.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hashbay import __version__
from hashbay.agent.core.status import SlotState

if TYPE_CHECKING:
    from hashbay.agent.interfaces.mqtt_topics import Topics

MAX_SLOTS = 8  # the configuration allows at most 8 [[slot]] entries
NAMESPACE = "hashbay"  # first part of identifiers; miner names are unique within a site

MINER_FIELDS = {
    "hashrate_hs": "total hashrate of the miner, H/s",
    "psu_input_power_w": "power drawn at the PSU input, W",
    "fan_noise_dba": "estimated fan noise, dB(A)",
}
"""Keys of the miner summary (`<prefix>/<miner>/state`) that discovery reads."""


@dataclass(frozen=True)
class DiscoveryMessage:
    topic: str
    payload: bytes  # JSON config, or b"" to remove the entity


@dataclass(frozen=True)
class Sensor:
    """One HA entity read from a JSON state topic."""

    key: str
    name: str
    template: str
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = "measurement"
    icon: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)


def _number(path: str, digits: int, scale: str = "") -> str:
    value = f"(value_json.{path}{scale})" if scale else f"value_json.{path}"
    return f"{{{{ {value} | round({digits}) if value_json.{path} is number else None }}}}"


MINER_SENSORS = (
    Sensor("hashrate", "Hashrate", _number("hashrate_hs", 2, " / 1e12"), "TH/s", icon="mdi:pound"),
    Sensor("psu_input_power", "PSU input power", _number("psu_input_power_w", 0), "W", "power"),
    Sensor("fan_noise", "Fan noise", _number("fan_noise_dba", 1), "dBA", "sound_pressure"),
)

SLOT_SENSORS = (
    Sensor(
        "hashrate",
        "Hashrate",
        "{{ (value_json.health.hashrate_hs / 1e12) | round(2) if value_json.health else None }}",
        "TH/s",
        icon="mdi:pound",
    ),
    Sensor(
        "temperature",
        "Temperature",
        "{% set t = value_json.temps_c | select('number') | list %}{{ t | max if t else None }}",
        "°C",
        "temperature",
    ),
    Sensor("power", "Power", _number("power_w", 0), "W", "power"),
    Sensor(
        "health",
        "Health score",
        "{{ value_json.health.score | round(0) if value_json.health else None }}",
        "%",
        icon="mdi:heart-pulse",
    ),
    Sensor(
        "state",
        "State",
        "{{ value_json.state }}",
        device_class="enum",
        state_class=None,
        icon="mdi:expansion-card",
        extra={
            "options": [state.value for state in SlotState],
            "json_attributes_template": (
                "{{ {'serial': value_json.serial, 'model': value_json.model, "
                "'detail': value_json.detail, 'locate': value_json.locate} | tojson }}"
            ),
        },
    ),
)


def discovery_messages(topics: Topics, discovery_prefix: str, slots: int) -> list[DiscoveryMessage]:
    """Every config message for this miner and its `slots` slots."""
    node = _node(topics.miner)
    miner_device = {
        "identifiers": [node],
        "name": topics.miner,
        "manufacturer": "hashbay",
        "model": "modular miner",
        "sw_version": __version__,
    }
    messages = [
        _sensor_config(
            sensor,
            topic=_topic(discovery_prefix, "sensor", node, sensor.key),
            unique_id=f"{node}_{sensor.key}",
            state_topic=topics.state,
            availability_topic=topics.status,
            device=miner_device,
        )
        for sensor in MINER_SENSORS
    ]
    messages.append(
        {
            "topic": _topic(discovery_prefix, "binary_sensor", node, "online"),
            "name": "Online",
            "unique_id": f"{node}_online",
            "state_topic": topics.status,
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "device": miner_device,
            "origin": _ORIGIN,
        }
    )
    for slot in range(slots):
        device = {
            "identifiers": [f"{node}_slot{slot}"],
            "name": f"{topics.miner} slot {slot}",
            "manufacturer": "hashbay",
            "model": "hashboard slot",
            "via_device": node,
        }
        state_topic = topics.slot_state(slot)
        for sensor in SLOT_SENSORS:
            object_id = f"slot{slot}_{sensor.key}"
            config = _sensor_config(
                sensor,
                topic=_topic(discovery_prefix, "sensor", node, object_id),
                unique_id=f"{node}_{object_id}",
                state_topic=state_topic,
                availability_topic=topics.status,
                device=device,
            )
            if "json_attributes_template" in config:
                config["json_attributes_topic"] = state_topic
            messages.append(config)
    return [_encode(config) for config in messages]


def clear_messages(
    topics: Topics, discovery_prefix: str, slots: Iterable[int], *, miner_too: bool = False
) -> list[DiscoveryMessage]:
    """Empty retained configs that remove the given slots' entities (and the miner's)."""
    node = _node(topics.miner)
    found: list[DiscoveryMessage] = []
    if miner_too:
        found += [
            DiscoveryMessage(_topic(discovery_prefix, "sensor", node, s.key), b"")
            for s in MINER_SENSORS
        ]
        found.append(
            DiscoveryMessage(_topic(discovery_prefix, "binary_sensor", node, "online"), b"")
        )
    for slot in slots:
        found += [
            DiscoveryMessage(_topic(discovery_prefix, "sensor", node, f"slot{slot}_{s.key}"), b"")
            for s in SLOT_SENSORS
        ]
    return found


_ORIGIN = {"name": "hashbay", "sw_version": __version__}


def _node(miner: str) -> str:
    return f"{NAMESPACE}_{miner}"


def _topic(prefix: str, component: str, node: str, object_id: str) -> str:
    return f"{prefix}/{component}/{node}/{object_id}/config"


def _sensor_config(
    sensor: Sensor,
    *,
    topic: str,
    unique_id: str,
    state_topic: str,
    availability_topic: str,
    device: dict[str, Any],
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "topic": topic,
        "name": sensor.name,
        "unique_id": unique_id,
        "state_topic": state_topic,
        "value_template": sensor.template,
        "availability_topic": availability_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
        "origin": _ORIGIN,
    }
    optional = {
        "unit_of_measurement": sensor.unit,
        "device_class": sensor.device_class,
        "state_class": sensor.state_class,
        "icon": sensor.icon,
    }
    config.update({k: v for k, v in optional.items() if v is not None})
    config.update(sensor.extra)
    return config


def _encode(config: dict[str, Any]) -> DiscoveryMessage:
    topic = config.pop("topic")
    payload = json.dumps(config, ensure_ascii=False, separators=(",", ":")).encode()
    return DiscoveryMessage(topic, payload)
