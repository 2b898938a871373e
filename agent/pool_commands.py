"""The `pools` and `pools_reset` commands: a new pool list, checked, stored, then mined on.

Nothing changes unless the whole list passes the config's rules; the list is on disk
before the pool manager takes it and before the command is acknowledged. The boards keep
hashing throughout: pools that stay keep their connections and work (`PoolManager.replace`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hashbay.agent.commands import Command, CommandError
from hashbay.agent.pool_list_store import PoolListStore, pool_json
from hashbay.agent.pools import PoolManager, PoolSettings
from hashbay.drivers.errors import ConfigError

NAMES = ("pools", "pools_reset")


class PoolCommands:
    def __init__(self, store: PoolListStore, manager: PoolManager | None) -> None:
        self._store = store
        self._manager = manager
        self._changing = asyncio.Lock()  # one list at a time, each stored then applied

    async def __call__(self, command: Command) -> dict[str, Any]:
        manager = self._manager
        if manager is None:
            raise CommandError(
                f"{command.name}: this agent hashes on local work (it started with no "
                "[[pool]] in its configuration); add one there and restart"
            )
        if command.name == "pools_reset":
            pools = self._store.configured
            if not pools:
                raise CommandError("pools_reset: the configuration lists no pool to go back to")
        else:
            try:
                pools = self._store.parse(command.args["pools"])
            except ConfigError as exc:
                raise CommandError(f"pools: {exc}") from None
        async with self._changing:
            try:
                if command.name == "pools_reset":
                    await asyncio.to_thread(self._store.clear)
                else:
                    await asyncio.to_thread(self._store.save, pools)
            except OSError as exc:
                raise CommandError(f"{command.name}: cannot store the pool list: {exc}") from None
            manager.replace(pools)
        return self.reply(pools)

    def reply(self, pools: tuple[PoolSettings, ...]) -> dict[str, Any]:
        return {"pools": [pool_json(p) for p in pools], "source": self._store.source}
