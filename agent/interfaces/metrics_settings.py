"""The `[metrics]` table: kept apart from the server so the config never imports it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hashbay.agent.core.settings import setting
from hashbay.drivers.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class MetricsSettings:
    enabled: bool = setting(False, "Serve Prometheus / OpenMetrics series at `/metrics`.")
    bind: str = setting(
        "127.0.0.1",
        "Address to listen on: `127.0.0.1` (this machine: a local agent or a tunnel), "
        "`0.0.0.0` for a Prometheus elsewhere on the LAN.",
        pattern=r"[0-9A-Fa-f:.]{2,45}",
    )
    port: int = setting(9184, "TCP port (0: any free port).", min=0, max=65535)
    per_chip: bool = setting(
        False,
        "Also serve one series per chip (nonces, hardware errors, clock): about 400 "
        "series per board; the operator chooses the cardinality.",
    )
    timeout_s: float = setting(
        5.0, "A client must send its request within this time.", unit="s", min=0.1, max=60
    )

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.bind)
        except ValueError:
            raise ConfigError(f"metrics.bind: {self.bind!r} is not an IP address") from None
