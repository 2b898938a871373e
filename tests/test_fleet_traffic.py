"""The fleet bench's load: the agent's payloads at its steady rate, readable by the view."""

from __future__ import annotations

from hashbay.tools.bench.fleet_traffic import STEADY_BYTES_PER_S, FarmTraffic
from hashbay.tools.fleet.model import FleetModel

from .support import Clock


def test_the_load_is_the_agents_steady_rate_and_keeps_the_swap_queue_moving() -> None:
    clock = Clock(0.0)
    traffic = FarmTraffic(100, prefix="farm", wall=clock)
    model = FleetModel("farm", clock=clock, wall=clock)
    for message in traffic.retained():
        assert model.ingest(message.topic, message.payload)
    queue_sizes = []
    for second in range(1, 901):
        clock.now = float(second)
        for message in traffic.due(clock.now):
            assert model.ingest(message.topic, message.payload), message
        if second % 60 == 0:
            queue_sizes.append(len(model.swap_queue()))
    per_miner = traffic.published_bytes / 900 / 100
    assert abs(per_miner - STEADY_BYTES_PER_S) < 0.1 * STEADY_BYTES_PER_S
    summary = model.summary()
    assert (summary.miners, summary.offline, summary.rejected) == (100, 1, 0)
    assert summary.duplicates > 0  # at-least-once delivery is part of the load
    categories = {item.category for item in model.swap_queue()}
    assert categories == {"fault", "needs_service", "degrading", "low_health"}
    assert min(queue_sizes) > 0 and max(queue_sizes) < 3 * 100  # modules leave as well
    assert summary.modules.get("empty", 0) > 0  # swaps happen
