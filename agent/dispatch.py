"""Carries out validated commands on the slot controllers; one handler for every channel
(MQTT now, the local control socket and the miner API later)."""

from __future__ import annotations

from typing import Any

from hashbay.agent.commands import Command, CommandError
from hashbay.agent.slots import CommandRefused, SlotController


class Dispatcher:
    def __init__(self, controllers: list[SlotController]) -> None:
        self._controllers = controllers

    async def __call__(self, command: Command) -> dict[str, Any]:
        slot = command.args.get("slot")
        controller = self._controllers[slot] if isinstance(slot, int) else None
        try:
            if command.name == "prepare_swap" and controller is not None:
                state = await controller.prepare_swap()
                return {"slot": slot, "state": state.value}
            if command.name == "cancel_swap" and controller is not None:
                state = await controller.cancel_swap()
                return {"slot": slot, "state": state.value}
            if command.name == "locate" and controller is not None:
                controller.locate(str(command.args["mode"]))
                return {"slot": slot, "locate": command.args["mode"]}
        except CommandRefused as exc:
            raise CommandError(str(exc)) from None
        raise CommandError(f"command {command.name!r} is not handled by this agent")
