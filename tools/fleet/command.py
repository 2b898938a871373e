"""`hashbay fleet`: the farm's view from its broker, once or live.

The broker settings are the agent's `[mqtt]` table (from `--config`, an agent config or a
file holding only that table), with command-line options on top, checked by the same
rules as the agent's. Exit codes as the rest of `hashbay`: 2 for bad settings, 69 when
the broker cannot be reached, 1 for a miner that is not known.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, TextIO

import aiomqtt

from hashbay.agent.core.settings import parse_table
from hashbay.agent.daemon.config import MqttSection
from hashbay.drivers.errors import ConfigError
from hashbay.tools.fleet import client as broker
from hashbay.tools.fleet import html, render
from hashbay.tools.fleet.model import (
    LOW_HEALTH,
    STALE_AFTER_S,
    FarmSummary,
    FleetModel,
    SwapItem,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 69
SETTLE_S = 0.5  # the retained burst on subscribing is over once quiet this long
SETTLE_MAX_S = 5.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?")
_SCALE = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
# Options that set an [mqtt] key, and the key.
_MQTT_OPTIONS = {
    "host": "host",
    "port": "port",
    "username": "username",
    "password_file": "password_file",
    "ca_file": "ca_file",
    "cert_file": "cert_file",
    "key_file": "key_file",
    "prefix": "topic_prefix",
}


def duration(text: str) -> float:
    """`10s`, `2.5`, `500ms`, `1m`: seconds, positive."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 10s or 1m, got {text!r}")
    seconds = float(match.group(1)) * _SCALE[match.group(2)]
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got {text!r}")
    return seconds


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "fleet",
        help="the farm from its MQTT broker: summary, swap queue, a miner in detail",
        description="Reads every miner's MQTT topics from the farm's broker (not the local "
        "agent) and shows the farm: miners online, hashrate, power, and the modules to swap.",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="take [mqtt] from this agent config")
    p.add_argument("--host", help="broker host (mqtt.host)")
    p.add_argument("--port", type=int, help="broker port (mqtt.port)")
    p.add_argument("--username", help="mqtt.username")
    p.add_argument("--password-file", type=_absolute, metavar="FILE", help="mqtt.password_file")
    p.add_argument("--tls", action="store_true", default=None, help="connect with TLS")
    p.add_argument("--ca-file", type=_absolute, metavar="FILE", help="mqtt.ca_file")
    p.add_argument("--cert-file", type=_absolute, metavar="FILE", help="mqtt.cert_file")
    p.add_argument("--key-file", type=_absolute, metavar="FILE", help="mqtt.key_file")
    p.add_argument("--prefix", metavar="PREFIX", help="mqtt.topic_prefix (hashbay)")
    p.add_argument("--client-id", metavar="ID", help="MQTT client id (default: unique)")
    p.add_argument(
        "--group",
        type=_group,
        metavar="NAME",
        help="take events through the shared subscription $share/NAME/…: the group's "
        "fleet processes split them (each still reads all retained state)",
    )
    p.add_argument("--once", action="store_true", help="read the farm, print once, exit")
    p.add_argument(
        "--json", action="store_true", dest="fleet_json", help="JSON (one object per frame)"
    )
    p.add_argument("--miner", metavar="NAME", help="one miner in detail")
    p.add_argument(
        "--every",
        type=duration,
        metavar="DURATION",
        help="redraw (or rewrite --html) this often: 10s, 1m (default 2s live)",
    )
    p.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write the view as one self-contained HTML page (with --every: rewrite it, "
        "atomically, that often)",
    )
    p.add_argument("--count", type=int, metavar="N", help="stop after N frames")
    p.add_argument(
        "--stale-after",
        type=duration,
        default=STALE_AFTER_S,
        metavar="DURATION",
        help=f"a miner whose state is older is stale ({STALE_AFTER_S:g}s: 3 state intervals)",
    )
    p.add_argument(
        "--low-health",
        type=float,
        default=LOW_HEALTH,
        metavar="SCORE",
        help=f"modules below this health score are queued ({LOW_HEALTH:g})",
    )
    p.add_argument(
        "--rows", type=int, default=render.QUEUE_ROWS, metavar="N", help="queue rows shown"
    )
    p.add_argument(
        "--wait",
        type=duration,
        default=SETTLE_MAX_S,
        metavar="DURATION",
        help=f"--once: read at most this long ({SETTLE_MAX_S:g}s)",
    )


def _group(text: str) -> str:
    if re.fullmatch(broker.GROUP_PATTERN, text) is None:
        raise argparse.ArgumentTypeError(
            f"a group name is 1-64 letters, digits, '_' or '-', got {text!r}"
        )
    return text


def _absolute(text: str) -> str:
    return str(Path(text).resolve())


def mqtt_settings(args: argparse.Namespace) -> MqttSection:
    """[mqtt] from --config, options on top, checked as the agent checks its own."""
    raw: dict[str, Any] = {}
    if args.config is not None:
        try:
            document = tomllib.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{args.config}: cannot read: {exc}") from None
        table = document.get("mqtt", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{args.config}: [mqtt] must be a table")
        raw.update(table)
    for option, key in _MQTT_OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            raw[key] = value
    if args.tls:
        raw["tls"] = True
    return parse_table(MqttSection, raw, "mqtt")


def run(args: argparse.Namespace, out: TextIO) -> int:
    try:
        settings = mqtt_settings(args)
    except ConfigError as exc:
        print(f"hashbay fleet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    view = FleetView(args, settings, out)
    try:
        return asyncio.run(view.run())
    except ConfigError as exc:
        print(f"hashbay fleet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (aiomqtt.MqttError, OSError) as exc:
        where = f"{settings.host}:{settings.port}"
        print(f"hashbay fleet: cannot read the broker at {where}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return EXIT_OK


def _say_lost(error: str, retry_in_s: float) -> None:
    print(f"hashbay fleet: broker lost ({error}); retrying in {retry_in_s:.1f} s", file=sys.stderr)


class FleetView:
    def __init__(self, args: argparse.Namespace, settings: MqttSection, out: TextIO) -> None:
        self.args = args
        self.settings = settings
        self.out = out
        self.json = bool(args.json or args.fleet_json)
        self.model = FleetModel(
            settings.topic_prefix,
            clock=time.monotonic,
            wall=time.time,
            stale_after_s=args.stale_after,
            low_health=args.low_health,
        )
        self.client_id = args.client_id or broker.default_client_id()

    async def run(self) -> int:
        if self.args.once or (self.args.html is not None and self.args.every is None):
            await broker.read_once(
                self.settings,
                self.model,
                client_id=self.client_id,
                group=self.args.group,
                max_s=self.args.wait,
            )
            return self.frame()
        return await self.live(self.args.every or 2.0)

    async def live(self, every_s: float) -> int:
        connected = asyncio.Event()
        feeding = asyncio.create_task(
            broker.follow(
                self.settings,
                self.model,
                client_id=self.client_id,
                group=self.args.group,
                on_connected=connected.set,
                on_lost=_say_lost,
            )
        )
        waiting = asyncio.create_task(connected.wait())
        try:
            await asyncio.wait({feeding, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if feeding.done():
                feeding.result()  # settings it could not use: raise what it raised
            await self._settled()
            frames, code = 0, EXIT_OK
            while self.args.count is None or frames < self.args.count:
                if frames:
                    await asyncio.sleep(every_s)
                code = self.frame(clear=frames > 0)
                frames += 1
            return code
        finally:
            for task in (feeding, waiting):
                task.cancel()
            await asyncio.gather(feeding, waiting, return_exceptions=True)

    async def _settled(self) -> None:
        """Until the retained burst after subscribing is over (quiet for SETTLE_S)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_MAX_S
        seen = -1
        while seen != self.model.messages and loop.time() < deadline:
            seen = self.model.messages
            await asyncio.sleep(SETTLE_S)

    def frame(self, *, clear: bool = False) -> int:
        """Show the farm (or the miner asked for) once."""
        if self.args.miner is not None:
            detail = self.model.miner_detail(self.args.miner)
            if detail is None:
                print(
                    f"hashbay fleet: no miner {self.args.miner!r} on this broker", file=sys.stderr
                )
                return EXIT_FAILED
            self.emit(detail, lambda: render.miner_text(detail), clear=clear)
            return EXIT_OK
        queue = self.model.swap_queue()
        summary = self.model.summary(queue)
        self.model.sample(summary)
        if self.args.html is not None:
            return self.write_page(summary, queue)
        self.emit(
            render.snapshot(summary, queue),
            lambda: render.farm_text(summary, queue, rows=self.args.rows),
            clear=clear,
        )
        return EXIT_OK

    def write_page(self, summary: FarmSummary, queue: list[SwapItem]) -> int:
        text = html.page(self.model, summary, queue, refresh_s=self.args.every)
        try:
            html.write_atomically(self.args.html, text)
        except OSError as exc:
            print(f"hashbay fleet: cannot write {self.args.html}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        self.emit(
            {"html": str(self.args.html), "summary": summary.to_json()},
            lambda: (
                f"wrote {self.args.html}: {summary.miners} miners, "
                f"{summary.swap_queue} in the swap queue"
            ),
            clear=False,
        )
        return EXIT_OK

    def emit(self, data: Any, text: Any, *, clear: bool) -> None:
        if self.json:
            print(json.dumps(data, separators=(",", ":"), default=str), file=self.out)
        else:
            if clear and self.out.isatty():
                self.out.write("\x1b[H\x1b[2J")
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp}  {text()}\n", file=self.out)
        self.out.flush()
