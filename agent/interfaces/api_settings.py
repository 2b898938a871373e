"""Settings of the cgminer-compatible miner API (`miner_api`).

Declared apart from the service so the config assembles it without importing the
service (`config` imports settings, never services)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hashbay.agent.core.settings import scalars, setting
from hashbay.drivers.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    enabled: bool = setting(
        True, "Serve the cgminer-compatible miner API (fleet tools, Home Assistant, pyasic)."
    )
    bind: str = setting(
        "127.0.0.1",
        "Address to listen on: `127.0.0.1` (this machine only), `0.0.0.0` or `::` (every "
        "interface), or one of the machine's addresses.",
        pattern=r"[0-9A-Fa-f:.]{2,45}",
    )
    port: int = setting(
        4028, "TCP port; 4028 is where cgminer tools look (0: any free port).", min=0, max=65535
    )
    allow_changes: bool = setting(
        False,
        "Accept the changing commands (`ascdisable`, `ascenable`, `ascidentify`, the fleet "
        "controls and the pool commands) from `allowed_addresses`; otherwise the API is "
        "read-only.",
    )
    allowed_addresses: tuple[str, ...] = scalars(
        ("127.0.0.1/32", "::1/128"),
        "Networks (CIDR) whose clients may send changing commands when `allow_changes` is on.",
        max_items=32,
    )
    max_clients: int = setting(
        64, "Connections served at once; more are closed at once.", min=1, max=4096
    )
    timeout_s: float = setting(
        5.0,
        "A client must send its request, and take its reply, within this time.",
        unit="s",
        min=0.1,
        max=60,
    )

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.bind)
        except ValueError:
            raise ConfigError(
                f"api.bind: {self.bind!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"
            ) from None
        for n, network in enumerate(self.allowed_addresses):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(
                    f"api.allowed_addresses[{n}]: {network!r} is not a network such as "
                    "192.168.1.0/24"
                ) from None
