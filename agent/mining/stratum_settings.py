"""Settings of pool connections (`stratum_client`): timeouts, backoff, failover.

Declared apart from the service so the config assembles it without importing the
service (`config` imports settings, never services)."""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.core.settings import setting
from hashbay.agent.mining.pool_judge import JudgeSettings


@dataclass(frozen=True, kw_only=True)
class StratumSettings:
    connect_timeout_s: float = setting(
        10.0, "Time allowed to open a pool connection (TCP and TLS).", unit="s", min=0.1, max=120
    )
    response_timeout_s: float = setting(
        10.0,
        "Time a pool has to answer a handshake request or a share; an unanswered share is "
        "counted as such, an unanswered handshake fails the connection.",
        unit="s",
        min=0.1,
        max=120,
    )
    silence_timeout_s: float = setting(
        150.0,
        "A pool that sends nothing for this long is taken for dead (pools send new jobs "
        "every minute or so).",
        unit="s",
        min=0.5,
        max=3600,
    )
    backoff_min_s: float = setting(
        1.0, "First delay before reconnecting to a pool that failed.", unit="s", min=0.01, max=60
    )
    backoff_max_s: float = setting(
        60.0,
        "Longest reconnect delay (doubling from the first; reset once a connection has "
        "stayed up for failback_delay_s).",
        unit="s",
        min=0.05,
        max=3600,
    )
    failback_delay_s: float = setting(
        30.0,
        "A higher-priority pool that is back must stay up this long before work moves "
        "back to it (failover to a lower one is immediate).",
        unit="s",
        min=0,
        max=3600,
    )
    idle_after_s: float = setting(
        30.0,
        "With no pool delivering work for this long, work counts as unavailable and the "
        "power governor idles the boards; they ramp back when a pool returns.",
        unit="s",
        min=0,
        max=3600,
    )
    max_line_bytes: int = setting(
        65536,
        "Longest line accepted from a pool; a longer one is a protocol error.",
        unit="B",
        min=1024,
        max=4 * 1024 * 1024,
    )
    version_rolling: bool = setting(
        True,
        "Ask pools for version rolling (BIP 310 `mining.configure`); chips then roll the "
        "version bits the pool grants.",
    )
    reject_failover_share: float = setting(
        0.9,
        "A pool that refused (rejected or left unanswered) at least this share of the last "
        "reject_window_shares shares is given up: failover, as for a lost connection.",
        min=0.01,
        max=1,
    )
    reject_window_shares: int = setting(
        50,
        "How many recent share verdicts reject_failover_share is judged on.",
        min=1,
        max=100_000,
    )
    accept_timeout_s: float = setting(
        600.0,
        "A pool that accepted none of the shares sent to it for this long is given up "
        "(a miner that finds no share is not judged: that is its luck, not the pool's).",
        unit="s",
        min=1,
        max=86400,
    )
    reconnect_limit: int = setting(
        3,
        "A pool that sends `client.reconnect` this many times within reconnect_window_s "
        "is looping: it is given up like a failed one (its retries back off).",
        min=1,
        max=1000,
    )
    reconnect_window_s: float = setting(
        300.0, "Window of reconnect_limit.", unit="s", min=1, max=86400
    )

    @property
    def judge(self) -> JudgeSettings:
        return JudgeSettings(
            reject_share=self.reject_failover_share,
            reject_window=self.reject_window_shares,
            accept_timeout_s=self.accept_timeout_s,
            reconnect_limit=self.reconnect_limit,
            reconnect_window_s=self.reconnect_window_s,
        )
