"""The fleet view as the bench runs it: `hashbay fleet`'s client, model and rendering in a
process of its own (so its CPU and memory are its own), drawing the farm every `--every`
seconds as the live view does (to /dev/null), and timing each event that puts a module in
the swap queue: from the event's `at` (the publisher's clock, the same machine) to the
moment the model has it queued. On SIGTERM it writes what it measured to `--report`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hashbay.agent.daemon.config import MqttSection
from hashbay.tools.fleet import client, render
from hashbay.tools.fleet.model import FleetModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--every", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(consume(args))


async def consume(args: argparse.Namespace) -> None:
    lags: list[tuple[float, float]] = []  # (event at, seconds until queued)

    def queued(_miner: str, _slot: int, _category: str, event: Mapping[str, Any]) -> None:
        at = event.get("at")
        if isinstance(at, float | int):
            lags.append((at, time.time() - at))

    model = FleetModel(args.prefix, clock=time.monotonic, wall=time.time, on_queued=queued)
    settings = MqttSection(host="127.0.0.1", port=args.port, topic_prefix=args.prefix)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    feeding = asyncio.create_task(
        client.follow(settings, model, client_id=client.default_client_id())
    )
    frames = 0
    while not stop.is_set():
        queue = model.swap_queue()
        summary = model.summary(queue)
        model.sample(summary)
        render.farm_text(summary, queue)  # drawn as the live view draws it, then dropped
        frames += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.every):
                await stop.wait()
    feeding.cancel()
    summary = model.summary()
    report = {
        "lags_s": lags,
        "messages": model.messages,
        "events": summary.events,
        "duplicates": summary.duplicates,
        "rejected": summary.rejected,
        "miners": summary.miners,
        "swap_queue": summary.swap_queue,
        "frames": frames,
    }
    args.report.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
