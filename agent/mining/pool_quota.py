"""Splitting the hashrate between pools by quota (what Braiins OS calls it): which pool's
work the next chip job is built from.

Smooth weighted round-robin, as nginx balances upstreams: every pick adds each pool's
quota to its credit, the pool with the most credit gets the job and pays the sum of the
quotas back. Over any run of picks each pool's count stays within one of its exact share,
and the picks interleave (70/30 goes A A B A A B A A B A, not seven A then three B), so
every chain hashes for every pool. A chip job is about `chain.job_interval_s` of hashing,
so a share of the jobs is a share of the hashrate. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class SmoothRoundRobin(Generic[K]):
    """Picks keys in proportion to their weights, interleaved; the weights may change
    between picks (a pool joins or leaves), and keys kept keep their credit."""

    def __init__(self) -> None:
        self._credit: dict[K, int] = {}

    def pick(self, weights: Mapping[K, int]) -> K:
        """The key whose turn it is; ValueError when no key has a positive weight."""
        live = {key: weight for key, weight in weights.items() if weight > 0}
        if not live:
            raise ValueError("no key has a positive weight")
        credit = {key: self._credit.get(key, 0) + weight for key, weight in live.items()}
        chosen = max(credit, key=lambda key: credit[key])  # ties: the first listed
        credit[chosen] -= sum(live.values())
        self._credit = credit  # keys that left lose their credit
        return chosen


def split_percent(accepted: Mapping[K, int]) -> dict[K, float]:
    """Each pool's part of all the shares the pools accepted, in percent (0 for all
    before the first); pools in a split run at the same difficulty more often than not,
    and where they do not the shares each credited are still what an operator checks."""
    total = sum(count for count in accepted.values() if count > 0)
    if total <= 0:
        return {key: 0.0 for key in accepted}
    return {key: round(100.0 * max(0, count) / total, 2) for key, count in accepted.items()}
