"""What the pool manager needs from a connection to a pool, whatever protocol it speaks.

`StratumSession` (Stratum V1, agent/mining/stratum_client.py) and `Sv2Session` (Stratum V2,
agent/mining/sv2/session.py) both fit; the URL's scheme picks one, and from there on failover,
failback, idling and reporting treat them alike.
"""

from __future__ import annotations

from typing import Protocol

from hashbay.agent.mining.pool_settings import Endpoint
from hashbay.agent.mining.pool_work import Share, Template
from hashbay.agent.mining.stratum_client import PoolCounters


class PoolSession(Protocol):
    endpoint: Endpoint
    counters: PoolCounters
    stage: str  # what it was doing (a failure during "configure" drops version rolling)
    ready: bool  # set up and delivering work
    template: Template | None
    difficulty: float
    target: int  # the share target in force
    version_mask: int

    async def run(self) -> None:
        """Connect and serve until stopped (returns) or failed (raises PoolError)."""

    def submit(self, share: Share) -> bool:
        """Send a share now; False when this session can no longer take it."""

    def stop(self) -> None:
        """End the connection on purpose; `run()` then returns."""
