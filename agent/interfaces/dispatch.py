"""Carries out validated commands; one handler for every channel (MQTT, the local control
socket, the miner API), so a command means the same wherever it comes from.

Slot commands go to that slot's controller. Miner-wide ones (power target, quiet mode,
fan override, curtailment, prices) change the persisted operator controls, which the
governor and the thermal service follow; the reply carries the controls as they now are.
"""

from __future__ import annotations

from typing import Any

from hashbay.agent.interfaces.commands import Command, CommandError
from hashbay.agent.modules.slot_services import CommandRefused
from hashbay.agent.modules.slots import SlotController
from hashbay.agent.power.controls import ControlStore

# Command name -> the control changes it makes (values taken from the command's args).
CONTROL_COMMANDS: dict[str, dict[str, str | None]] = {
    "power_target": {"power_target_w": "watts"},
    "power_target_clear": {"power_target_w": None},
    "quiet": {"quiet": "mode"},
    "fan_override": {"fan_override": "duty"},
    "fan_auto": {"fan_override": None},
    "curtail": {"curtail": "mode"},
    "resume": {"curtail": None},
    "prices": {
        "electricity_per_kwh": "electricity_per_kwh",
        "hashprice_per_th_day": "hashprice_per_th_day",
    },
    "profit": {"profit": "on"},
}


class Dispatcher:
    def __init__(
        self, controllers: list[SlotController], controls: ControlStore | None = None
    ) -> None:
        self._controllers = controllers
        self._controls = controls

    async def __call__(self, command: Command) -> dict[str, Any]:
        slot = command.args.get("slot")
        controller = self._controllers[slot] if isinstance(slot, int) else None
        try:
            if controller is not None:
                return await self._slot_command(command, controller)
            changes = CONTROL_COMMANDS.get(command.name)
            if changes is not None and self._controls is not None:
                values = {
                    key: None if arg is None else command.args[arg] for key, arg in changes.items()
                }
                try:
                    controls = await self._controls.update_async(**values)
                except (ValueError, OSError) as exc:
                    raise CommandError(f"{command.name}: {exc}") from None
                return {"controls": controls.to_json()}
        except CommandRefused as exc:
            raise CommandError(str(exc)) from None
        raise CommandError(f"command {command.name!r} is not handled by this agent")

    @staticmethod
    async def _slot_command(command: Command, controller: SlotController) -> dict[str, Any]:
        slot = controller.index
        if command.name == "prepare_swap":
            return {"slot": slot, "state": (await controller.prepare_swap()).value}
        if command.name == "cancel_swap":
            return {"slot": slot, "state": (await controller.cancel_swap()).value}
        if command.name == "locate":
            controller.locate(str(command.args["mode"]))
            return {"slot": slot, "locate": command.args["mode"]}
        if command.name == "reset_slot":
            return {"slot": slot, "state": (await controller.reset()).value}
        if command.name == "tune":
            return {"slot": slot, "tuning": controller.start_tuning()}
        raise CommandError(f"command {command.name!r} is not handled by this agent")
