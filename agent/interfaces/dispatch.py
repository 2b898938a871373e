"""Carries out validated commands; one handler for every channel (MQTT, the local control
socket, the miner API), so a command means the same wherever it comes from.

Each command's handler is in its row of the command table (`commands.COMMANDS`); the
dispatcher is what the handlers act on. Slot commands go to that slot's controller.
Miner-wide ones (power target, quiet mode, fan override, curtailment, prices) change the
persisted operator controls, which the governor and the thermal service follow; the reply
carries the controls as they now are. The pool commands hand their list to `PoolCommands`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hashbay.agent.interfaces.commands import COMMANDS, Command, CommandError, SlotCommands
from hashbay.agent.interfaces.pool_commands import PoolCommands
from hashbay.agent.modules.slot_services import CommandRefused
from hashbay.agent.power.controls import ControlStore


class ControlsRefused(Exception):
    """The operator controls would not take a change (a bad value, or the file not written)."""


class Dispatcher:
    def __init__(
        self, controllers: Sequence[SlotCommands], controls: ControlStore, pools: PoolCommands
    ) -> None:
        self._controllers = controllers
        self._controls = controls
        self._pools = pools

    async def __call__(self, command: Command) -> dict[str, Any]:
        spec = COMMANDS.get(command.name)
        if spec is None or spec.handler is None:
            raise CommandError(f"command {command.name!r} is not handled by this agent")
        try:
            return await spec.handler(self, command.args)
        except CommandRefused as exc:
            raise CommandError(str(exc)) from None
        except ControlsRefused as exc:
            raise CommandError(f"{command.name}: {exc}") from None

    # -- what the handlers act on ------------------------------------------------------------

    def slot(self, index: int) -> SlotCommands:
        return self._controllers[index]

    async def change_controls(self, **changes: Any) -> dict[str, Any]:
        try:
            controls = await self._controls.update_async(**changes)
        except (ValueError, OSError) as exc:
            raise ControlsRefused(str(exc)) from None
        return {"controls": controls.to_json()}

    async def change_pools(self, tables: list[dict[str, Any]] | None) -> dict[str, Any]:
        return await self._pools.change(tables)
