"""The configured pools (`[[pool]]`): their settings, URLs and the checks across them.

Declared apart from the service so the config assembles it without importing the
service (`config` imports settings, never services)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from hashbay.agent.core.settings import REQUIRED, file_path, setting
from hashbay.agent.mining.stratum_settings import StratumSettings
from hashbay.agent.mining.sv2 import keys as sv2_keys
from hashbay.drivers.errors import ConfigError

SCHEMES = {"stratum+tcp": False, "stratum+ssl": True, "stratum+tls": True, sv2_keys.SCHEME: False}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    url: str = setting(
        REQUIRED,
        "Pool address: `stratum+tcp://host:port`, `stratum+ssl://host:port` for TLS, or "
        "`stratum2+tcp://host:port/<authority key>` for Stratum V2 (encrypted; the key, "
        "as the pool publishes it, authenticates the pool).",
        pattern=r"stratum\+(tcp|ssl|tls)://[^\s/?#@]{1,260}"
        r"|stratum2\+tcp://[^\s/?#@]{1,260}/[1-9A-HJ-NP-Za-km-z]{1,64}",
    )
    user: str = setting(
        REQUIRED,
        "Worker name the pool credits (usually `account.worker`).",
        pattern=r"[^\s\x00-\x1f]{1,128}",
    )
    password: str = setting("x", "Worker password; most pools ignore it.", pattern=r".{0,128}")
    ca_file: str = file_path(
        "CA bundle to verify a `stratum+ssl` pool with; empty for the system's."
    )
    quota: int = setting(
        0,
        "This pool's share of the hashrate (Braiins OS's quota): the alive pools with a "
        "quota all stay connected and split the work in proportion (70 and 30: 70 %/30 %). "
        "0: a failover pool, mined in priority order only while no pool with a quota is "
        "alive.",
        min=0,
        max=1000,
    )
    enabled: bool = setting(True, "false: listed (and shown) but never connected.")


def parse_url(url: str) -> Endpoint:
    """A pool URL as host, port and TLS, or ValueError saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {parts.scheme!r}")
    path = "" if parts.scheme == sv2_keys.SCHEME else parts.path
    if parts.username or parts.password or path or parts.query or parts.fragment:
        raise ValueError("must be scheme://host:port only (the worker goes in `user`)")
    authority_key(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError("has no host")
    if port is None or port == 0:
        raise ValueError("needs a port, e.g. stratum+tcp://pool.example.com:3333")
    return Endpoint(parts.hostname, port, SCHEMES[parts.scheme])


def authority_key(url: str) -> bytes | None:
    """A Stratum V2 URL's authority key (ValueError if it is not one); None for V1."""
    parts = urlsplit(url)
    return sv2_keys.authority_from_path(parts.path) if parts.scheme == sv2_keys.SCHEME else None


def check_pools(pools: tuple[PoolSettings, ...], stratum: StratumSettings) -> None:
    """Config checks that need more than one key: URLs, duplicates, backoff order."""
    seen: dict[tuple[str, str], int] = {}
    for index, pool in enumerate(pools):
        try:
            endpoint = parse_url(pool.url)
        except ValueError as exc:
            raise ConfigError(f"pool[{index}].url: {exc}") from None
        if pool.ca_file and not endpoint.tls:
            raise ConfigError(f"pool[{index}].ca_file: only used with stratum+ssl:// URLs")
        key = (pool.url, pool.user)
        if key in seen:
            raise ConfigError(f"pool[{index}]: same url and user as pool[{seen[key]}]")
        seen[key] = index
    if pools and not any(pool.enabled for pool in pools):
        raise ConfigError("pool: every pool is disabled; enable one (enabled = true)")
    if stratum.backoff_min_s > stratum.backoff_max_s:
        raise ConfigError("stratum.backoff_min_s: must not exceed stratum.backoff_max_s")
