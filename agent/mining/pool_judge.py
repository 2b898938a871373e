"""Judging a pool by what it delivers, not by its socket.

A pool can be up, authorized and sending jobs, and still be useless: it rejects every
share (a wrong worker, a pool-side fault, a difficulty we cannot meet), or it keeps
sending `client.reconnect` so no connection lasts long enough to mine. Neither ends the
connection by itself, so without a judgement the miner would stay on such a pool and
never try its backup. This judge keeps, per pool and across its connections:

- the verdicts of the last `reject_window` shares answered or expired: at least
  `reject_share` of them not accepted is a failure;
- how long shares have gone out with none accepted: `accept_timeout_s` of that is a
  failure (a miner that finds no share at all is not judged: that is its own luck);
- the pool's reconnect requests: `reconnect_limit` within `reconnect_window_s` is a loop.

Each verdict is a sentence for the pool's status and the event; after one, the evidence
is forgotten, so a pool that comes back is judged afresh on what it does then.
Pure logic over a clock, no I/O.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

ACCEPTED = ""  # the verdict of an accepted share; others are the pool's reason
UNANSWERED = "unanswered"


@dataclass(frozen=True)
class JudgeSettings:
    reject_share: float
    reject_window: int
    accept_timeout_s: float
    reconnect_limit: int
    reconnect_window_s: float


class PoolJudge:
    def __init__(self, settings: JudgeSettings) -> None:
        self.settings = settings
        self._results: deque[str] = deque(maxlen=settings.reject_window)
        self._unaccepted_since: float | None = None
        self._reconnects: deque[float] = deque()

    def sent(self, now_s: float) -> None:
        """A share went out: the accept clock starts, unless one is already running."""
        if self._unaccepted_since is None:
            self._unaccepted_since = now_s

    def accepted(self) -> None:
        self._results.append(ACCEPTED)
        self._unaccepted_since = None

    def refused(self, reason: str) -> str | None:
        """A share rejected (with the pool's reason) or never answered; the verdict if
        the pool has now failed."""
        self._results.append(reason or UNANSWERED)
        return self._reject_verdict()

    def idle_verdict(self, now_s: float) -> str | None:
        """Asked every second or so: the verdict if shares have gone unaccepted too long."""
        since = self._unaccepted_since
        if since is None or now_s - since < self.settings.accept_timeout_s:
            return None
        return self._given_up(
            f"no share accepted for {_duration(now_s - since)} while shares were sent"
        )

    def reconnect(self, now_s: float) -> str | None:
        """The pool asked us to reconnect; the verdict if it does so in a loop."""
        s = self.settings
        self._reconnects.append(now_s)
        while self._reconnects and now_s - self._reconnects[0] > s.reconnect_window_s:
            self._reconnects.popleft()
        if len(self._reconnects) < s.reconnect_limit:
            return None
        return self._given_up(
            f"asked to reconnect {len(self._reconnects)} times within "
            f"{_duration(s.reconnect_window_s)}: it loops"
        )

    def _reject_verdict(self) -> str | None:
        s = self.settings
        results = self._results
        if len(results) < s.reject_window:
            return None
        refused = [r for r in results if r != ACCEPTED]
        if len(refused) < s.reject_share * len(results):
            return None
        reasons = ", ".join(f"{r}: {n}" for r, n in Counter(refused).most_common(3))
        return self._given_up(
            f"rejected {len(refused)} of the last {len(results)} shares ({reasons})"
        )

    def _given_up(self, verdict: str) -> str:
        self._results.clear()
        self._unaccepted_since = None
        self._reconnects.clear()
        return verdict


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
