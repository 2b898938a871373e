"""The `pools` and `pools_reset` commands: a new pool list, checked, stored, then mined on.

Nothing changes unless the whole list passes the config's rules; the list is on disk
before the pool manager takes it and before the command is acknowledged. The boards keep
hashing throughout: pools that stay keep their connections and work (`PoolManager.replace`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hashbay.agent.interfaces.commands import CommandError
from hashbay.agent.mining.pool_list_store import PoolListStore, pool_json
from hashbay.agent.mining.pool_settings import PoolSettings
from hashbay.agent.mining.pools import PoolManager
from hashbay.drivers.errors import ConfigError


class PoolCommands:
    def __init__(self, store: PoolListStore, manager: PoolManager | None) -> None:
        self._store = store
        self._manager = manager
        self._changing = asyncio.Lock()  # one list at a time, each stored then applied

    async def change(self, tables: list[dict[str, Any]] | None) -> dict[str, Any]:
        """A new list (`pools`), or None to go back to the config's (`pools_reset`)."""
        name = "pools" if tables is not None else "pools_reset"
        manager = self._manager
        if manager is None:
            raise CommandError(
                f"{name}: this agent hashes on local work (it started with no "
                "[[pool]] in its configuration); add one there and restart"
            )
        if tables is None:
            pools = self._store.configured
            if not pools:
                raise CommandError("pools_reset: the configuration lists no pool to go back to")
        else:
            try:
                pools = self._store.parse(tables)
            except ConfigError as exc:
                raise CommandError(f"pools: {exc}") from None
        async with self._changing:
            try:
                if tables is None:
                    await asyncio.to_thread(self._store.clear)
                else:
                    await asyncio.to_thread(self._store.save, pools)
            except OSError as exc:
                raise CommandError(f"{name}: cannot store the pool list: {exc}") from None
            manager.replace(pools)
        return self.reply(pools)

    def reply(self, pools: tuple[PoolSettings, ...]) -> dict[str, Any]:
        return {"pools": [pool_json(p) for p in pools], "source": self._store.source}
