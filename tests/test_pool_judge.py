"""Judging a pool by what it delivers: refused shares, nothing accepted, reconnect loops."""

from __future__ import annotations

from hashbay.agent.mining.pool_judge import UNANSWERED, PoolJudge
from hashbay.agent.mining.stratum_settings import StratumSettings

SETTINGS = StratumSettings(
    reject_failover_share=0.9, reject_window_shares=10, accept_timeout_s=600, reconnect_limit=3
).judge


def test_refusals_are_judged_only_on_a_full_window_and_forgotten_after_a_verdict() -> None:
    judge = PoolJudge(SETTINGS)
    judge.accepted()
    verdicts = [judge.refused("low difficulty share (23)") for _ in range(8)]
    assert verdicts == [None] * 8
    assert judge.refused(UNANSWERED) == (
        "rejected 9 of the last 10 shares (low difficulty share (23): 8, unanswered: 1)"
    )
    assert judge.refused("duplicate share (22)") is None  # judged afresh from here


def test_a_pool_accepting_enough_is_never_given_up() -> None:
    judge = PoolJudge(SETTINGS)
    for n in range(1000):
        if n % 5 == 0:
            judge.accepted()
        else:
            assert judge.refused("stale (21)") is None  # 80 % refused: below 90 %


def test_nothing_accepted_for_too_long_counts_only_while_shares_go_out() -> None:
    judge = PoolJudge(SETTINGS)
    assert judge.idle_verdict(10_000.0) is None  # no share sent: the miner's luck
    judge.sent(100.0)
    judge.sent(500.0)
    assert judge.idle_verdict(699.0) is None
    assert judge.idle_verdict(700.0) == "no share accepted for 10 min while shares were sent"
    judge.sent(800.0)
    judge.accepted()
    assert judge.idle_verdict(5000.0) is None


def test_reconnects_are_a_loop_only_when_they_crowd_the_window() -> None:
    judge = PoolJudge(SETTINGS)
    assert [judge.reconnect(t) for t in (0.0, 400.0, 800.0, 1200.0)] == [None] * 4
    assert judge.reconnect(1250.0) is None
    assert judge.reconnect(1260.0) == "asked to reconnect 3 times within 5 min: it loops"
    assert judge.reconnect(1270.0) is None  # forgotten after the verdict
