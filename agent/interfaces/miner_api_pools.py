"""cgminer's pool commands on the miner API, each turned into one `pools` command.

`addpool|URL,USER,PASS`, `removepool|N`, `switchpool|N` (N goes first in priority),
`enablepool|N`, `disablepool|N`, and hashbay's `poolset|<JSON list>` (the whole list, as
the `pools` command takes it: what the pyasic backend's `send_config` sends). Each edits
the list in force and sends it whole, so it passes the same checks, storage and handler
as the control socket and MQTT. Pure: a request is mapped to a command; the server runs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from hashbay.agent.interfaces.miner_api_fleet import ParameterError
from hashbay.agent.mining.pool_settings import PoolSettings

Pools = tuple[PoolSettings, ...]


class PoolCode:
    """cgminer's codes for its pool commands (api.c), and hashbay's for poolset."""

    SWITCH = 27
    ENABLED = 47
    DISABLED = 48
    ADDED = 55
    REMOVED = 68
    POOLSET = 314


@dataclass(frozen=True)
class PoolEdit:
    code: int
    build: Callable[[str, Pools], list[dict[str, Any]]]  # the new list, as the command takes it
    message: str  # formatted with the parameter and the pool's url


def _listed(current: Pools) -> list[dict[str, Any]]:
    return [asdict(pool) for pool in current]


def _index(parameter: str, current: Pools) -> int:
    try:
        index = int(parameter.strip())
    except ValueError:
        raise ParameterError(f"takes a pool number, 0 to {len(current) - 1}") from None
    if not 0 <= index < len(current):
        raise ParameterError(f"pool {index} does not exist; pools are 0 to {len(current) - 1}")
    return index


def _add(parameter: str, current: Pools) -> list[dict[str, Any]]:
    parts = parameter.split(",")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise ParameterError("addpool takes URL,USER or URL,USER,PASSWORD")
    pool: dict[str, Any] = {"url": parts[0].strip(), "user": parts[1].strip()}
    if len(parts) == 3:
        pool["password"] = parts[2]
    return [*_listed(current), pool]


def _remove(parameter: str, current: Pools) -> list[dict[str, Any]]:
    index = _index(parameter, current)
    if len(current) == 1:
        raise ParameterError("cannot remove the last pool")
    listed = _listed(current)
    del listed[index]
    return listed


def _switch(parameter: str, current: Pools) -> list[dict[str, Any]]:
    listed = _listed(current)
    chosen = listed.pop(_index(parameter, current))
    return [chosen, *listed]


def _enabled(on: bool) -> Callable[[str, Pools], list[dict[str, Any]]]:
    def build(parameter: str, current: Pools) -> list[dict[str, Any]]:
        listed = _listed(current)
        listed[_index(parameter, current)]["enabled"] = on
        return listed

    return build


def _poolset(parameter: str, current: Pools) -> list[dict[str, Any]]:
    try:
        pools = json.loads(parameter, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ParameterError("poolset takes a JSON list of pools ({url, user, ...})") from None
    if not isinstance(pools, list):
        raise ParameterError("poolset takes a JSON list of pools ({url, user, ...})")
    return pools


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


EDITS: Mapping[str, PoolEdit] = {
    "addpool": PoolEdit(PoolCode.ADDED, _add, "Added pool '{url}'"),
    "removepool": PoolEdit(PoolCode.REMOVED, _remove, "Removed pool {parameter}:'{url}'"),
    "switchpool": PoolEdit(PoolCode.SWITCH, _switch, "Switching to pool {parameter}:'{url}'"),
    "enablepool": PoolEdit(PoolCode.ENABLED, _enabled(True), "Enabling pool {parameter}:'{url}'"),
    "disablepool": PoolEdit(
        PoolCode.DISABLED, _enabled(False), "Disabling pool {parameter}:'{url}'"
    ),
    "poolset": PoolEdit(PoolCode.POOLSET, _poolset, "Pool list set"),
}


def command(name: str, parameter: str, current: Pools) -> tuple[dict[str, Any], str]:
    """The `pools` command for this request and the success message; ParameterError if
    the parameter is not one the request takes."""
    edit = EDITS[name]
    if not current and name != "poolset":
        raise ParameterError(f"{name}: no pool list to edit (the agent hashes on local work)")
    pools = edit.build(parameter, current)
    touched = ""
    if name == "addpool":
        touched = str(pools[-1].get("url", ""))
    elif name != "poolset":
        touched = current[_index(parameter, current)].url
    message = edit.message.format(parameter=parameter.strip(), url=touched)
    return {"command": "pools", "pools": pools}, message
