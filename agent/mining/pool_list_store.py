"""The pool list sent from afar (the `pools` command), checked like the config's
`[[pool]]` and kept across restarts.

A list from MQTT, the control socket or the miner API is untrusted: it goes through the
very declarations and cross-checks the config file does (`PoolSettings`, `check_pools`),
plus one rule of its own: a CA file from afar may only be one the configuration already
names, so a remote client cannot make the agent open files of its choosing. The list is
written to the state directory before the command is acknowledged, and from then on it
is the pool list, until `pools_reset` returns to the configuration's. The file is read
back as untrusted too: a damaged one is listed in `problems` (the agent raises a
`state_dropped` event) and the configuration's pools are used.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog

from hashbay.agent.core.files import read_limited, write_atomically
from hashbay.agent.core.quoting import clip
from hashbay.agent.core.settings import fields_of, parse_field
from hashbay.agent.daemon.config import Config
from hashbay.agent.mining.pool_settings import PoolSettings, check_pools
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.drivers.errors import ConfigError

log = structlog.get_logger("hashbay.pools")

SCHEMA = 1
MAX_POOLS = next(f.rule.max_items or 8 for f in fields_of(Config) if f.name == "pool")
MAX_FILE_BYTES = 32 * 1024


def parse_pool_list(
    raw: Any, stratum: StratumSettings, *, ca_files: frozenset[str]
) -> tuple[PoolSettings, ...]:
    """An untrusted pool list as the config would take it; ConfigError says what is wrong.

    `ca_files` are the CA files the configuration names: the only ones allowed from afar
    (checked before any file is opened, so a refusal tells nothing about other files)."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError("pool: must be a list of 1 to 8 pool tables ({url, user, ...})")
    for index, item in enumerate(raw):
        ca_file = item.get("ca_file", "") if isinstance(item, dict) else ""
        if isinstance(ca_file, str) and ca_file and ca_file not in ca_files:
            allowed = ", ".join(sorted(ca_files)) or "none"
            raise ConfigError(
                f"pool[{index}].ca_file: {clip(ca_file, 60)!r} is not a CA file the "
                f"configuration names; a pool list from afar may use {allowed} (or empty)"
            )
    pools: tuple[PoolSettings, ...] = parse_field(Config, "pool", raw, "pool")
    check_pools(pools, stratum)
    return pools


def pool_json(pool: PoolSettings) -> dict[str, Any]:
    """A pool as replies show it: everything but the password."""
    return {k: v for k, v in asdict(pool).items() if k != "password"}


class PoolListStore:
    """The pool list in force: the one sent from afar if any, else the configuration's."""

    def __init__(self, path: Path, configured: tuple[PoolSettings, ...], stratum: StratumSettings):
        self.path = path
        self.configured = configured
        self.stratum = stratum
        self.ca_files = frozenset(p.ca_file for p in configured if p.ca_file)
        self.problems: list[str] = []  # what was wrong with the file, in words
        self.stored = self._load()

    @property
    def current(self) -> tuple[PoolSettings, ...]:
        return self.configured if self.stored is None else self.stored

    @property
    def source(self) -> str:
        return "config" if self.stored is None else "remote"

    def parse(self, raw: Any) -> tuple[PoolSettings, ...]:
        return parse_pool_list(raw, self.stratum, ca_files=self.ca_files)

    def save(self, pools: tuple[PoolSettings, ...]) -> None:
        """Written whole (or not at all) before anything uses it."""
        body = {"schema": SCHEMA, "pools": [asdict(pool) for pool in pools]}
        write_atomically(self.path, json.dumps(body, indent=1).encode())
        self.stored = pools

    def clear(self) -> None:
        """Back to the configuration's pools (the file goes)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.stored = None

    def _load(self) -> tuple[PoolSettings, ...] | None:
        try:
            raw = json.loads(read_limited(self.path, MAX_FILE_BYTES))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            self._dropped(f"unreadable ({clip(str(exc), 80)})")
            return None
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA or "pools" not in raw:
            self._dropped("unknown shape")
            return None
        try:
            pools = self.parse(raw["pools"])
        except ConfigError as exc:
            self._dropped(str(exc))
            return None
        log.info("pool list from afar restored", pools=[p.url for p in pools])
        return pools

    def _dropped(self, why: str) -> None:
        log.error("stored pool list left out; using the configuration's", path=str(self.path))
        self.problems.append(f"{self.path}: {why}; using the configuration's pools")
