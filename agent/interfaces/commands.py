"""Commands from technicians and fleet tools, checked completely before anything acts.

The payload comes from the network (MQTT today, the local control socket later), so it is
untrusted: size-limited, strict UTF-8 JSON, one object, a known command, exactly that
command's keys, each of the right type and range. Anything else is refused with a
message that says what was wrong and what is allowed; a refused command has no effect.

A command is one row in `COMMANDS`: its name, its arguments with their rules (shared
with the operator controls, `core/rules.py`) and its handler; a new command is a new row,
with no change to the parser or the dispatcher.

Wire form: a flat JSON object, e.g. `{"command": "locate", "slot": 1, "mode": "blink"}`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from hashbay.agent.core.quoting import clip, quote
from hashbay.agent.core.rules import (
    CURTAIL_MODE,
    ELECTRICITY_PRICE,
    FAN_DUTY,
    FLAG,
    HASHPRICE,
    LOCATE_MODE,
    POWER_TARGET_W,
    QUIET_MODE,
    SLOT,
    Arg,
)
from hashbay.agent.core.status import SlotState
from hashbay.drivers.errors import HashbayError

MAX_PAYLOAD_BYTES = 4096
NAME_KEY = "command"


class CommandError(HashbayError):
    """A command was refused (malformed, unknown, out of range, or impossible right now).

    The message goes back to whoever sent the command, so it says what to change.
    """


@dataclass(frozen=True)
class Command:
    name: str
    args: Mapping[str, Any] = field(default_factory=dict, hash=False)


CommandHandler = Callable[[Command], Awaitable[dict[str, Any]]]
"""Carries out a valid command and returns its result; raises CommandError to refuse it
(e.g. "slot 2 is empty"). Should return promptly: long work reports back through events."""


class SlotCommands(Protocol):
    """What a slot's controller offers commands."""

    index: int

    async def prepare_swap(self) -> SlotState: ...

    async def cancel_swap(self) -> SlotState: ...

    async def reset(self) -> SlotState: ...

    def locate(self, mode: str) -> None: ...

    def start_tuning(self) -> str: ...


class CommandTarget(Protocol):
    """The agent as commands see it: its slots, the operator controls, the pool list."""

    def slot(self, index: int) -> SlotCommands: ...

    async def change_controls(self, **changes: Any) -> dict[str, Any]: ...

    async def change_pools(self, tables: list[dict[str, Any]] | None) -> dict[str, Any]:
        """A new pool list (its tables checked as the config's), or None: the config's."""
        ...


Handler = Callable[[CommandTarget, Mapping[str, Any]], Awaitable[dict[str, Any]]]
"""Carries out one command, its arguments already checked against its spec."""


@dataclass(frozen=True)
class Tables:
    """A list of tables (a pool list); each table's keys are checked by the handler,
    against the same declarations as the config file."""

    max_items: int
    what: str

    def describe(self, slots: int) -> str:
        return f"a list of 1 to {self.max_items} {self.what} tables"

    def accepts(self, value: Any, slots: int) -> bool:
        return (
            isinstance(value, list)
            and 0 < len(value) <= self.max_items
            and all(isinstance(item, dict) for item in value)
        )


@dataclass(frozen=True)
class CommandSpec:
    name: str
    doc: str
    args: Mapping[str, Arg] = field(default_factory=dict, hash=False)
    handler: Handler | None = field(default=None, hash=False, compare=False)


async def _prepare_swap(agent: CommandTarget, args: Mapping[str, Any]) -> dict[str, Any]:
    slot = agent.slot(args["slot"])
    return {"slot": slot.index, "state": (await slot.prepare_swap()).value}


async def _cancel_swap(agent: CommandTarget, args: Mapping[str, Any]) -> dict[str, Any]:
    slot = agent.slot(args["slot"])
    return {"slot": slot.index, "state": (await slot.cancel_swap()).value}


async def _reset_slot(agent: CommandTarget, args: Mapping[str, Any]) -> dict[str, Any]:
    slot = agent.slot(args["slot"])
    return {"slot": slot.index, "state": (await slot.reset()).value}


async def _locate(agent: CommandTarget, args: Mapping[str, Any]) -> dict[str, Any]:
    slot = agent.slot(args["slot"])
    slot.locate(str(args["mode"]))
    return {"slot": slot.index, "locate": args["mode"]}


async def _tune(agent: CommandTarget, args: Mapping[str, Any]) -> dict[str, Any]:
    slot = agent.slot(args["slot"])
    return {"slot": slot.index, "tuning": slot.start_tuning()}


async def _pools(agent: CommandTarget, args: Mapping[str, Any]) -> dict[str, Any]:
    return await agent.change_pools(args["pools"])


async def _pools_reset(agent: CommandTarget, args: Mapping[str, Any]) -> dict[str, Any]:
    return await agent.change_pools(None)


def _controls(**changes: str | None) -> Handler:
    """A command that changes operator controls: each control key takes the named
    argument's value (None: the control is cleared, back to the configuration)."""

    async def change(agent: CommandTarget, args: Mapping[str, Any]) -> dict[str, Any]:
        values = {key: None if arg is None else args[arg] for key, arg in changes.items()}
        return await agent.change_controls(**values)

    return change


COMMANDS: Mapping[str, CommandSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            CommandSpec(
                "prepare_swap",
                "Drain the module in the slot and power it off so it can be pulled; a "
                "safe_to_remove event follows.",
                {"slot": SLOT},
                _prepare_swap,
            ),
            CommandSpec(
                "cancel_swap",
                "Return a module prepared for removal to hashing.",
                {"slot": SLOT},
                _cancel_swap,
            ),
            CommandSpec(
                "locate",
                "Set the slot's locate LED so a technician finds the right module.",
                {"slot": SLOT, "mode": LOCATE_MODE},
                _locate,
            ),
            CommandSpec(
                "power_target",
                "Hold the whole miner at this input power (measured at the PSU); boards "
                "ramp to it through the safety envelope.",
                {"watts": POWER_TARGET_W},
                _controls(power_target_w="watts"),
            ),
            CommandSpec(
                "power_target_clear",
                "Drop the power target: boards run at their best.",
                {},
                _controls(power_target_w=None),
            ),
            CommandSpec(
                "quiet",
                "Quiet mode: cap the fans' noise (on), ignore the cap (off), or follow the "
                "configured schedule.",
                {"mode": QUIET_MODE},
                _controls(quiet="mode"),
            ),
            CommandSpec(
                "fan_override",
                "Run every fan at this duty (0..1, clamped to the limits); overheating still "
                "forces them up.",
                {"duty": FAN_DUTY},
                _controls(fan_override="duty"),
            ),
            CommandSpec(
                "fan_auto",
                "Return the fans to temperature control.",
                {},
                _controls(fan_override=None),
            ),
            CommandSpec(
                "curtail",
                "Demand response: power the boards down (sleep) or hold them at minimum power "
                "(min). Survives a restart until resumed.",
                {"mode": CURTAIL_MODE},
                _controls(curtail="mode"),
            ),
            CommandSpec(
                "resume",
                "End curtailment: boards ramp back to full power.",
                {},
                _controls(curtail=None),
            ),
            CommandSpec(
                "tune",
                "Autotune the module in the slot (per-chip clocks at each voltage); the result "
                "is stored under its serial.",
                {"slot": SLOT},
                _tune,
            ),
            CommandSpec(
                "reset_slot",
                "Clear the slot's fault and restart count and bring its module up again.",
                {"slot": SLOT},
                _reset_slot,
            ),
            CommandSpec(
                "prices",
                "Set the electricity price and the hashprice for profitability mode.",
                {"electricity_per_kwh": ELECTRICITY_PRICE, "hashprice_per_th_day": HASHPRICE},
                _controls(
                    electricity_per_kwh="electricity_per_kwh",
                    hashprice_per_th_day="hashprice_per_th_day",
                ),
            ),
            CommandSpec(
                "pools",
                "Replace the pool list at once (kept across restarts): each pool as in the "
                "config's [[pool]] (url, user, password, ca_file, quota, enabled), checked "
                "the same way; pools that stay keep their connections.",
                {"pools": Tables(8, "pool")},
                _pools,
            ),
            CommandSpec(
                "pools_reset",
                "Drop the pool list sent from afar: mine on the config's.",
                {},
                _pools_reset,
            ),
            CommandSpec(
                "profit",
                "Profitability mode: run at the power point that earns most, or stop when "
                "nothing earns.",
                {"on": FLAG},
                _controls(profit="on"),
            ),
        )
    }
)


def parse_command(payload: bytes, *, slots: int) -> Command:
    """Validate an untrusted command payload; raises CommandError saying what is wrong."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError(
            f"command is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} are accepted"
        )
    data = _decode(payload)
    if not isinstance(data, dict):
        raise CommandError(
            f"command must be a JSON object such as {_EXAMPLE}, got {_json_kind(data)}"
        )
    return parse_command_mapping(data, slots=slots)


def parse_command_mapping(data: Mapping[Any, Any], *, slots: int) -> Command:
    """Validate an already decoded, untrusted command (`{"command": name, **args}`), as the
    control socket receives it; raises CommandError saying what is wrong."""
    if not isinstance(data, Mapping):
        raise CommandError(f"command must be a mapping such as {_EXAMPLE}")
    for key, value in data.items():
        if not isinstance(key, str):
            raise CommandError("command keys must be text")
        if not _plain(value):
            raise CommandError(f"command value of {_show(key)} is not a JSON-style value")
    name = data.get(NAME_KEY)
    if name is None:
        raise CommandError(f'command object has no "{NAME_KEY}" key; {_known()}')
    spec = COMMANDS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise CommandError(f"unknown command {_show(name)}; {_known()}")
    extra = [key for key in data if key != NAME_KEY and key not in spec.args]
    if extra:
        raise CommandError(f"{spec.name}: unexpected key {_show(extra[0])}; {_takes(spec)}")
    args: dict[str, Any] = {}
    for key, rule in spec.args.items():
        if key not in data:
            raise CommandError(
                f"{spec.name}: missing key {_show(key)} ({rule.describe(slots)}); {_takes(spec)}"
            )
        value = data[key]
        if not rule.accepts(value, slots):
            raise CommandError(
                f"{spec.name}: {key} must be {rule.describe(slots)}, got {_show(value)}"
            )
        args[key] = value
    return Command(spec.name, MappingProxyType(args))


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether a decoded value is made only of what JSON has (no bytes or extension types),
    so error messages can quote it."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if depth >= 32:
        return False
    if isinstance(value, list):
        return all(_plain(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def describe_commands(slots: int) -> list[str]:
    """One line per command, for help texts and the README."""
    lines = []
    for spec in COMMANDS.values():
        args = ", ".join(f"{k}: {rule.describe(slots)}" for k, rule in spec.args.items())
        lines.append(f"{spec.name} {{{args}}} — {spec.doc}")
    return lines


_EXAMPLE = '{"command": "locate", "slot": 0, "mode": "blink"}'


def _decode(payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(f"command is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except ValueError as exc:  # also an integer of thousands of digits
        raise CommandError(f"command is not valid JSON: {quote(str(exc), 120)}") from None
    except RecursionError:
        raise CommandError("command is nested too deeply") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise CommandError(f"command has the key {_show(key)} twice")
        data[key] = value
    return data


def _no_constants(name: str) -> Any:
    raise CommandError(f"command is not valid JSON: {name} is not a number JSON allows")


def _known() -> str:
    return "known commands: " + ", ".join(sorted(COMMANDS))


def _takes(spec: CommandSpec) -> str:
    if not spec.args:
        return f"{spec.name} takes no arguments"
    return f"{spec.name} takes " + ", ".join(spec.args)


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _show(value: Any) -> str:
    """A value quoted back to the sender as JSON, in a few words."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return quote(value, 40)
    return clip(text, 40)
