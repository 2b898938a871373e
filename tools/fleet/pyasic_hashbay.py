"""A pyasic backend for hashbay miners, in pyasic's own shape (an RPC class, a
`DataLocations` table, one `_get_*` function per field, controls returning bool), so it
can be proposed upstream as it is.

pyasic recognises firmware by marker strings in `version`; hashbay's is "hashbay" in
`Miner`/`Firmware`. Until pyasic knows it, `get_miner(ip)` here probes for that marker and
returns a `HashbayMiner`, and defers to `pyasic.get_miner` for anything else.

Everything is read from hashbay's cgminer-compatible API (one joined request per
`get_data`): `stats` for boards, fans and expected hashrate, `summary` for hashrate, power,
power limit and mode, `config` for hostname and the fault light, `faults` for errors with
hashbay's canonical codes, `pools`, `version`. Controls need `api.allow_changes` on the
miner, for the fleet machine's address.

pyasic is an optional extra (`pip install hashbay[fleet]`), never a dependency of the agent.
"""

from __future__ import annotations

import json
from typing import Any

import pyasic
from pyasic.config import MinerConfig
from pyasic.config.pools import PoolConfig
from pyasic.data import Fan, HashBoard
from pyasic.data.error_codes.base import BaseMinerError
from pyasic.data.pools import PoolMetrics, PoolUrl
from pyasic.device.algorithm import AlgoHashRateType, MinerAlgo
from pyasic.errors import APIError
from pyasic.miners.base import AnyMiner, BaseMiner
from pyasic.miners.data import DataFunction, DataLocations, DataOptions, RPCAPICommand
from pyasic.rpc.cgminer import CGMinerRPCAPI

MARKER = "HASHBAY"
DEFAULT_PORT = 4028


class HashbayError(BaseMinerError):
    """One active fault: hashbay's canonical code, its name, severity and what to do.

    Attributes:
        error_code: The stable numeric code (hashbay's fault catalog).
        error_message: What is wrong, in words.
        name: The code's name, e.g. `over_temp_cut`.
        severity: `info`, `warning`, `error` or `critical`.
        slot: The hashboard slot, or None for the whole miner.
        action: What the technician should do.
    """

    error_message: str
    error_code: int = 0
    name: str = ""
    severity: str = ""
    slot: int | None = None
    action: str = ""


class HashbayRPCAPI(CGMinerRPCAPI):
    """hashbay's cgminer-compatible API plus its own commands (`faults`) and the
    LuxOS-named controls it accepts (`curtail`, `ledset`, `powerset`), and `poolset`."""

    async def faults(self) -> dict[str, Any]:
        """What is wrong now, with canonical codes, most severe first."""
        return await self.send_command("faults")  # type: ignore[no-any-return]

    async def curtail(self, action: str) -> dict[str, Any]:
        """`sleep` (boards off), `min` (minimum power) or `wakeup`."""
        return await self.send_command("curtail", parameters=action)  # type: ignore[no-any-return]

    async def ledset(self, mode: str) -> dict[str, Any]:
        """Every occupied slot's locate LED: `on`, `off` or `blink`."""
        return await self.send_command("ledset", parameters=mode)  # type: ignore[no-any-return]

    async def powerset(self, watts: int) -> dict[str, Any]:
        """The whole miner's input power target in watts; 0 clears it."""
        return await self.send_command("powerset", parameters=str(watts))  # type: ignore[no-any-return]

    async def poolset(self, pools: list[dict[str, Any]]) -> dict[str, Any]:
        """Replace the pool list at once: `[{"url", "user", "password", "quota"}, ...]`."""
        parameter = json.dumps(pools, separators=(",", ":"))
        return await self.send_command("poolset", parameters=parameter)  # type: ignore[no-any-return]


HASHBAY_DATA_LOC = DataLocations(
    **{
        str(DataOptions.API_VERSION): DataFunction(
            "_get_api_ver", [RPCAPICommand("rpc_version", "version")]
        ),
        str(DataOptions.FW_VERSION): DataFunction(
            "_get_fw_ver", [RPCAPICommand("rpc_version", "version")]
        ),
        str(DataOptions.HOSTNAME): DataFunction(
            "_get_hostname", [RPCAPICommand("rpc_config", "config")]
        ),
        str(DataOptions.HASHRATE): DataFunction(
            "_get_hashrate", [RPCAPICommand("rpc_summary", "summary")]
        ),
        str(DataOptions.EXPECTED_HASHRATE): DataFunction(
            "_get_expected_hashrate", [RPCAPICommand("rpc_stats", "stats")]
        ),
        str(DataOptions.HASHBOARDS): DataFunction(
            "_get_hashboards", [RPCAPICommand("rpc_stats", "stats")]
        ),
        str(DataOptions.WATTAGE): DataFunction(
            "_get_wattage", [RPCAPICommand("rpc_summary", "summary")]
        ),
        str(DataOptions.WATTAGE_LIMIT): DataFunction(
            "_get_wattage_limit", [RPCAPICommand("rpc_summary", "summary")]
        ),
        str(DataOptions.FANS): DataFunction("_get_fans", [RPCAPICommand("rpc_stats", "stats")]),
        str(DataOptions.ERRORS): DataFunction(
            "_get_errors", [RPCAPICommand("rpc_faults", "faults")]
        ),
        str(DataOptions.FAULT_LIGHT): DataFunction(
            "_get_fault_light", [RPCAPICommand("rpc_config", "config")]
        ),
        str(DataOptions.IS_MINING): DataFunction(
            "_is_mining", [RPCAPICommand("rpc_summary", "summary")]
        ),
        str(DataOptions.UPTIME): DataFunction(
            "_get_uptime", [RPCAPICommand("rpc_summary", "summary")]
        ),
        str(DataOptions.POOLS): DataFunction("_get_pools", [RPCAPICommand("rpc_pools", "pools")]),
    }
)


class HashbayMiner(BaseMiner):
    """Handler for miners running the hashbay agent (hot-swappable hashboard modules)."""

    _rpc_cls = HashbayRPCAPI
    rpc: HashbayRPCAPI
    algo = MinerAlgo.SHA256

    data_locations = HASHBAY_DATA_LOC

    supports_shutdown = True

    def __init__(self, ip: str, version: str | None = None, *, port: int = DEFAULT_PORT) -> None:
        super().__init__(ip, version)
        self.rpc.port = port  # pyasic assumes 4028; hashbay's is configurable

    @property
    def model(self) -> str:
        return "hashbay"

    # -- controls -------------------------------------------------------------------------

    async def fault_light_on(self) -> bool:
        return await self._ok(self.rpc.ledset("blink"))

    async def fault_light_off(self) -> bool:
        return await self._ok(self.rpc.ledset("off"))

    async def stop_mining(self) -> bool:
        return await self._ok(self.rpc.curtail("sleep"))

    async def resume_mining(self) -> bool:
        return await self._ok(self.rpc.curtail("wakeup"))

    async def set_power_limit(self, wattage: int) -> bool:
        return await self._ok(self.rpc.powerset(int(wattage)))

    async def get_config(self) -> MinerConfig:
        try:
            rpc_pools = await self.rpc.pools()
        except APIError:
            return MinerConfig()
        return MinerConfig(pools=PoolConfig.from_api(rpc_pools))

    async def send_config(self, config: MinerConfig, user_suffix: str | None = None) -> None:
        """Only the pools are hashbay's to take from a config. One group: its pools in
        failover order. Several groups split the hashrate by their quotas: each group's
        first pool carries its group's quota, the others back them all up."""
        split = len(config.pools.groups) > 1
        pools = [
            {
                "url": pool.url,
                "user": f"{pool.user}{user_suffix or ''}",
                "password": pool.password,
                "quota": group.quota if split and n == 0 else 0,
            }
            for group in config.pools.groups
            for n, pool in enumerate(group.pools)
        ]
        await self.rpc.poolset(pools)

    @staticmethod
    async def _ok(request: Any) -> bool:
        try:
            await request
        except (APIError, LookupError):
            return False
        return True

    # -- data gathering -------------------------------------------------------------------

    async def _get_api_ver(self, rpc_version: dict[str, Any] | None = None) -> str | None:
        rpc_version = rpc_version or await self._try(self.rpc.version)
        try:
            self.api_ver = str(rpc_version["VERSION"][0]["API"])
        except (LookupError, TypeError):
            return None
        return self.api_ver

    async def _get_fw_ver(self, rpc_version: dict[str, Any] | None = None) -> str | None:
        rpc_version = rpc_version or await self._try(self.rpc.version)
        try:
            self.fw_ver = str(rpc_version["VERSION"][0]["Firmware"])
        except (LookupError, TypeError):
            return None
        return self.fw_ver

    async def _get_hostname(self, rpc_config: dict[str, Any] | None = None) -> str | None:
        rpc_config = rpc_config or await self._try(self.rpc.config)
        try:
            return str(rpc_config["CONFIG"][0]["Hostname"]) or None
        except (LookupError, TypeError):
            return None

    async def _get_hashrate(
        self, rpc_summary: dict[str, Any] | None = None
    ) -> AlgoHashRateType | None:
        rpc_summary = rpc_summary or await self._try(self.rpc.summary)
        try:
            rate = float(rpc_summary["SUMMARY"][0]["GHS 5s"])
        except (LookupError, TypeError, ValueError):
            return None
        return self._ghs(rate)

    async def _get_expected_hashrate(
        self, rpc_stats: dict[str, Any] | None = None
    ) -> AlgoHashRateType | None:
        rpc_stats = rpc_stats or await self._try(self.rpc.stats)
        try:
            rate = float(rpc_stats["STATS"][1]["total_rateideal"])
        except (LookupError, TypeError, ValueError):
            return None
        return self._ghs(rate)

    async def _get_hashboards(self, rpc_stats: dict[str, Any] | None = None) -> list[HashBoard]:
        rpc_stats = rpc_stats or await self._try(self.rpc.stats)
        try:
            entry = rpc_stats["STATS"][1]
            count = int(entry["miner_count"])
        except (LookupError, TypeError, ValueError):
            return []
        return [self._board(entry, slot) for slot in range(count)]

    def _board(self, entry: dict[str, Any], slot: int) -> HashBoard:
        n = slot + 1
        serial = entry.get(f"chain_serial{n}") or None
        board = HashBoard(slot=slot, serial_number=serial, missing=serial is None)
        expected = entry.get(f"chain_acn_expected{n}")
        board.expected_chips = int(expected) if expected else None
        if serial is None:
            return board
        board.chips = int(entry.get(f"chain_acn{n}", 0))
        rate = entry.get(f"chain_rate{n}")
        board.hashrate = self._ghs(float(rate)) if rate not in (None, "") else None
        board.temp = _temp(entry.get(f"temp2_{n}"))  # the coolest sensor: the board
        board.chip_temp = _temp(entry.get(f"temp{n}"))  # the hottest: next to the chips
        board.active = bool(board.chips)
        return board

    async def _get_wattage(self, rpc_summary: dict[str, Any] | None = None) -> int | None:
        rpc_summary = rpc_summary or await self._try(self.rpc.summary)
        try:
            return int(rpc_summary["SUMMARY"][0]["Power"]) or None
        except (LookupError, TypeError, ValueError):
            return None

    async def _get_wattage_limit(self, rpc_summary: dict[str, Any] | None = None) -> int | None:
        rpc_summary = rpc_summary or await self._try(self.rpc.summary)
        try:
            return int(rpc_summary["SUMMARY"][0]["Power Limit"]) or None
        except (LookupError, TypeError, ValueError):
            return None

    async def _get_fans(self, rpc_stats: dict[str, Any] | None = None) -> list[Fan]:
        rpc_stats = rpc_stats or await self._try(self.rpc.stats)
        try:
            entry = rpc_stats["STATS"][1]
            return [Fan(speed=int(entry[f"fan{n}"])) for n in range(1, int(entry["fan_num"]) + 1)]
        except (LookupError, TypeError, ValueError):
            return []

    async def _get_errors(self, rpc_faults: dict[str, Any] | None = None) -> list[HashbayError]:
        rpc_faults = rpc_faults or await self._try(self.rpc.faults)
        try:
            items = rpc_faults["FAULTS"]
            return [
                HashbayError(
                    error_code=int(item["Code"]),
                    error_message=str(item["Message"]),
                    name=str(item["Name"]),
                    severity=str(item["Severity"]),
                    slot=None if int(item["Slot"]) < 0 else int(item["Slot"]),
                    action=str(item["Action"]),
                )
                for item in items
            ]
        except (LookupError, TypeError, ValueError):
            return []

    async def _get_fault_light(self, rpc_config: dict[str, Any] | None = None) -> bool | None:
        rpc_config = rpc_config or await self._try(self.rpc.config)
        try:
            self.light = bool(rpc_config["CONFIG"][0]["RedLed"] != "off")
        except (LookupError, TypeError):
            return None
        return self.light

    async def _is_mining(self, rpc_summary: dict[str, Any] | None = None) -> bool | None:
        rpc_summary = rpc_summary or await self._try(self.rpc.summary)
        try:
            return bool(rpc_summary["SUMMARY"][0]["Power Mode"] != "sleep")
        except (LookupError, TypeError):
            return None

    async def _get_uptime(self, rpc_summary: dict[str, Any] | None = None) -> int | None:
        rpc_summary = rpc_summary or await self._try(self.rpc.summary)
        try:
            return int(rpc_summary["SUMMARY"][0]["Elapsed"])
        except (LookupError, TypeError, ValueError):
            return None

    async def _get_pools(self, rpc_pools: dict[str, Any] | None = None) -> list[PoolMetrics]:
        rpc_pools = rpc_pools or await self._try(self.rpc.pools)
        try:
            items = rpc_pools["POOLS"]
        except (LookupError, TypeError):
            return []
        return [
            PoolMetrics(
                url=PoolUrl.from_str(item["URL"]) if item.get("URL") else None,
                accepted=item.get("Accepted"),
                rejected=item.get("Rejected"),
                get_failures=item.get("Get Failures"),
                remote_failures=item.get("Remote Failures"),
                active=item.get("Stratum Active"),
                alive=item.get("Status") == "Alive",
                index=item.get("POOL"),
                user=item.get("User"),
            )
            for item in items
        ]

    def _ghs(self, rate: float) -> AlgoHashRateType:
        return self.algo.hashrate(rate=rate, unit=self.algo.unit.GH).into(self.algo.unit.default)

    @staticmethod
    async def _try(request: Any) -> dict[str, Any]:
        """A reply pyasic did not gather for us, asked on its own ({} if it fails)."""
        try:
            reply = await request()
        except APIError:
            return {}
        return reply if isinstance(reply, dict) else {}


def _temp(value: Any) -> float | None:
    try:
        reading = float(value)
    except (TypeError, ValueError):
        return None
    return reading or None  # 0 is how bmminer-style stats say "no reading"


async def is_hashbay(ip: str, port: int = DEFAULT_PORT) -> bool:
    """Whether the miner's `version` reply carries hashbay's marker."""
    try:
        reply = await HashbayRPCAPI(ip, port=port).version()
    except (APIError, OSError):
        return False
    return MARKER in json.dumps(reply).upper()


async def get_miner(ip: str, port: int = DEFAULT_PORT) -> HashbayMiner | AnyMiner | None:
    """A `HashbayMiner` for a hashbay miner, else whatever pyasic makes of it (or None)."""
    if await is_hashbay(ip, port):
        return HashbayMiner(ip, port=port)
    return await pyasic.get_miner(ip)
