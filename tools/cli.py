"""`hashbay`: the technician's command line. It talks to the running agent over its control
socket, never to hardware.

Exit codes (sysexits where they fit): 0 done; 1 the agent refused or failed the command
(or a module faulted during a swap); 2 usage; 69 the agent is not running; 75 no answer
in time; 76 the agent's reply made no sense; 77 permission denied (socket or change).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from hashbay import __version__
from hashbay.agent.core.fault_codes import CATALOG
from hashbay.agent.interfaces.control_protocol import (
    MAX_REPLY_BYTES,
    ControlProtocolError,
    EventFrame,
    FrameDecoder,
    Reply,
    encode_frame,
    parse_server_message,
    request_message,
)
from hashbay.agent.modules.swap_order import swap_order
from hashbay.tools import cli_render as render
from hashbay.tools.fleet import command as fleet

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
EXIT_TEMPFAIL = 75
EXIT_PROTOCOL = 76
EXIT_NOPERM = 77
SOCKET_ENV = "HASHBAY_SOCKET"
_ERROR_EXITS = {
    "denied": EXIT_NOPERM,
    "busy": EXIT_TEMPFAIL,
    "refused": EXIT_FAILED,
    "failed": EXIT_FAILED,
    "invalid": EXIT_FAILED,
    "bad_args": EXIT_FAILED,
}


class CliError(Exception):
    """Ends the command with a message on stderr and a meaningful exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_socket() -> Path:
    """$HASHBAY_SOCKET, else the agent's default runtime dir and socket name."""
    if os.environ.get(SOCKET_ENV):
        return Path(os.environ[SOCKET_ENV])
    from hashbay.agent.daemon.config import AgentSection  # only when needed: it is slow to import
    from hashbay.agent.interfaces.control_settings import ControlSettings

    return Path(AgentSection().runtime_dir) / ControlSettings().socket


class ControlClient:
    """A blocking connection to the control socket; events that arrive while waiting for a
    reply are kept for `next_event`."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(MAX_REPLY_BYTES)
        self._messages: deque[dict[str, Any]] = deque()
        self._events: deque[EventFrame] = deque()
        self._next_id = 1

    def __enter__(self) -> ControlClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise CliError(
                f"the hashbay agent is not running (nothing listens on {self.path}); "
                "start it with `systemctl start hashbay-agent`, or pass --socket",
                EXIT_UNAVAILABLE,
            ) from None
        except PermissionError:
            sock.close()
            raise CliError(
                f"permission denied on {self.path}: join the agent's group "
                "(control.group, usually `hashbay`) or use sudo",
                EXIT_NOPERM,
            ) from None
        except TimeoutError:
            sock.close()
            raise CliError(
                f"the agent did not accept the connection on {self.path}", EXIT_TEMPFAIL
            ) from None
        except OSError as exc:
            sock.close()
            raise CliError(
                f"cannot connect to {self.path}: {exc.strerror or exc}", EXIT_UNAVAILABLE
            ) from None
        self._sock = sock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result; an error reply raises CliError."""
        rid = self._next_id
        self._next_id += 1
        self._send(encode_frame(request_message(rid, op, args)))
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = self._receive(deadline)
            if isinstance(message, EventFrame):
                self._events.append(message)
                continue
            if message.id != rid:
                if message.ok or message.id is not None:
                    continue  # a late reply to something else: not ours
                raise _reply_error(message)
            if not message.ok:
                raise _reply_error(message)
            return message.result

    def next_event(self, timeout_s: float) -> EventFrame | None:
        """The next streamed event (after `subscribe`), or None if none came in time."""
        if self._events:
            return self._events.popleft()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                message = self._receive(deadline, quiet=True)
                if isinstance(message, EventFrame):
                    return message
        except _Quiet:
            return None

    def _send(self, frame: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(frame)
        except TimeoutError:
            raise CliError("the agent is not taking requests", EXIT_TEMPFAIL) from None
        except OSError as exc:
            raise CliError(f"lost the connection to the agent: {exc}", EXIT_UNAVAILABLE) from None

    def _receive(self, deadline: float, *, quiet: bool = False) -> Reply | EventFrame:
        assert self._sock is not None
        while not self._messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if quiet:
                    raise _Quiet
                raise CliError(
                    f"the agent did not answer within {self.timeout_s:g} s", EXIT_TEMPFAIL
                )
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise CliError(
                    f"lost the connection to the agent: {exc}", EXIT_UNAVAILABLE
                ) from None
            if not data:
                raise CliError("the agent closed the connection", EXIT_UNAVAILABLE)
            try:
                self._messages.extend(self._decoder.feed(data))
            except ControlProtocolError as exc:
                raise CliError(f"unreadable reply from the agent: {exc}", EXIT_PROTOCOL) from None
        try:
            return parse_server_message(self._messages.popleft())
        except ControlProtocolError as exc:
            raise CliError(f"unreadable reply from the agent: {exc}", EXIT_PROTOCOL) from None


class _Quiet(Exception):
    """No event within the wait."""


def _reply_error(reply: Reply) -> CliError:
    code = _ERROR_EXITS.get(reply.error_code, EXIT_PROTOCOL)
    return CliError(f"{reply.error_message} [{reply.error_code}]", code)


# -- arguments ----------------------------------------------------------------------------


def _slot(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"slot must be a number, got {text!r}") from None
    if not 0 <= value < 64:
        raise argparse.ArgumentTypeError(f"slot must be from 0 (the first slot), got {value}")
    return value


def _duty(text: str) -> float:
    """0..1, or a percentage such as 60%."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"duty must be 0..1 or a percentage, got {text!r}"
        ) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"duty must be between 0 and 1 (0 %..100 %), got {text}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hashbay",
        description="Technician CLI for the hashbay agent on this controller.",
        epilog="Exit codes: 0 ok, 1 refused/failed, 2 usage, 69 agent not running, "
        "75 timeout, 76 bad reply, 77 permission denied.",
    )
    parser.add_argument("--version", action="version", version=f"hashbay {__version__}")
    parser.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        help=f"control socket (default: ${SOCKET_ENV}, else RUNTIME_DIR/control.sock)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "--timeout", type=_positive, default=10.0, metavar="S", help="reply timeout (10 s)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("status", help="the miner and every slot")
    sub.add_parser("slots", help="every slot, one line each").add_argument(
        "--swap-order",
        action="store_true",
        help="the module to swap first first: faulted, then predicted to fail, then by health",
    )
    p = sub.add_parser("slot", help="one slot in detail: chips, temperatures, rails, health")
    p.add_argument("slot", type=_slot)
    p.add_argument("--chips", action="store_true", help="list every chip")

    swap = sub.add_parser("swap", help="prepare a module for removal, or cancel that")
    swap_sub = swap.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = swap_sub.add_parser("prepare", help="drain and power off; waits until safe to remove")
    p.add_argument("slot", type=_slot)
    p.add_argument("--no-wait", action="store_true", help="return once the agent has begun")
    p.add_argument(
        "--wait", type=_positive, default=120.0, metavar="S", help="give up after S s (120)"
    )
    p = swap_sub.add_parser("cancel", help="return a prepared module to hashing")
    p.add_argument("slot", type=_slot)

    p = sub.add_parser("locate", help="blink (or light, or stop) a slot's locate LED")
    p.add_argument("slot", type=_slot)
    p.add_argument("mode", nargs="?", choices=("blink", "on", "off"), default="blink")

    p = sub.add_parser("fans", help="fans and PSU; `fans override DUTY`, `fans auto`")
    p.add_argument("action", nargs="?", choices=("show", "override", "auto"), default="show")
    p.add_argument("duty", nargs="?", type=_duty, help="0..1 or a percentage (override)")

    p = sub.add_parser("power", help="the power target: show, --target W, or --clear")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--target", type=_positive, metavar="W", help="hold the miner at W watts")
    group.add_argument("--clear", action="store_true", help="drop the power target")

    p = sub.add_parser("quiet", help="quiet mode: on, off, or follow the schedule")
    p.add_argument("mode", choices=("on", "off", "schedule"))

    p = sub.add_parser("curtail", help="demand response: power the boards down")
    p.add_argument("--mode", choices=("sleep", "min"), default="sleep")
    sub.add_parser("resume", help="end curtailment")

    p = sub.add_parser("tune", help="autotune a slot's module")
    p.add_argument("slot", type=_slot)
    p = sub.add_parser("reset", help="clear a slot's fault and bring its module up again")
    p.add_argument("slot", type=_slot)

    p = sub.add_parser("prices", help="electricity price and hashprice (profitability)")
    p.add_argument("--electricity", type=float, required=True, metavar="PER_KWH")
    p.add_argument("--hashprice", type=float, required=True, metavar="PER_TH_DAY")
    p = sub.add_parser("profit", help="profitability mode on or off")
    p.add_argument("mode", choices=("on", "off"))

    p = sub.add_parser("watch", help="a live view, redrawn until Ctrl-C")
    p.add_argument("--interval", type=_positive, default=2.0, metavar="S")
    p.add_argument("--count", type=_count, metavar="N", help="stop after N frames")

    p = sub.add_parser("events", help="recent events; --follow streams new ones")
    p.add_argument("--limit", type=_count, default=20, metavar="N")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--count", type=_count, metavar="N", help="with --follow: stop after N")
    return _with_fleet_commands(parser, sub)


def _with_fleet_commands(parser: argparse.ArgumentParser, sub: Any) -> argparse.ArgumentParser:
    """What a fleet operator shares with the technician: fault codes, the pool list, the
    farm's view."""
    p = sub.add_parser("codes", help="the fault codes: what each means and what to do")
    p.add_argument("code", nargs="?", type=int, help="only this code")
    p = sub.add_parser(
        "pools",
        help="the pools and their split; `pools set POOL...` replaces the list, `pools reset` "
        "goes back to the config's",
        description="Each POOL is key=value pairs in one argument, as the config's [[pool]]: "
        "'url=stratum+tcp://pool.example.com:3333 user=acct.worker quota=70'.",
    )
    p.add_argument("action", nargs="?", choices=("show", "set", "reset"), default="show")
    p.add_argument("pool", nargs="*", type=_pool_spec, help="with set: the new list, in order")
    fleet.add_parser(sub)
    return parser


def _pool_spec(text: str) -> dict[str, Any]:
    """`url=... user=... quota=70` as a pool table; the agent checks the values."""
    pool: dict[str, Any] = {}
    for part in text.split():
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{part!r}: expected key=value (url=..., user=...)")
        if key in pool:
            raise argparse.ArgumentTypeError(f"{key} given twice")
        pool[key] = _pool_value(key, value)
    return pool


def _pool_value(key: str, value: str) -> Any:
    if key == "quota":
        try:
            return int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"quota={value!r}: must be an integer") from None
    if key == "enabled":
        if value not in ("true", "false"):
            raise argparse.ArgumentTypeError(f"enabled={value!r}: must be true or false")
        return value == "true"
    return value


# -- commands -----------------------------------------------------------------------------


class Cli:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.path: Path = args.socket or default_socket()

    def client(self) -> ControlClient:
        return ControlClient(self.path, self.args.timeout)

    def emit(self, data: Any, text: str | Callable[[], str]) -> None:
        """JSON of `data` with --json, else the text (a callable is only called if needed)."""
        if self.args.json:
            print(json.dumps(data, separators=(",", ":"), default=str), file=self.out)
        else:
            print(text if isinstance(text, str) else text(), file=self.out)
        self.out.flush()

    def read(self, op: str, args: dict[str, Any] | None, text: Callable[[Any], str]) -> int:
        with self.client() as client:
            result = client.call(op, args)
        self.emit(result, lambda: text(result))
        return EXIT_OK

    def change(self, name: str, **args: Any) -> int:
        with self.client() as client:
            result = client.call("command", {"command": name, **args})
        self.emit(result, lambda: render.change_text(name, result))
        return EXIT_OK

    def run(self) -> int:
        a = self.args
        simple: dict[str, Callable[[], int]] = {
            "status": lambda: self.read("status", None, render.status_text),
            "slots": lambda: self.read("slots", None, lambda r: self.slots(r["slots"])),
            "slot": lambda: self.read(
                "slot", {"slot": a.slot}, lambda r: render.slot_text(r, all_chips=a.chips)
            ),
            "locate": lambda: self.change("locate", slot=a.slot, mode=a.mode),
            "fans": lambda: self.fans(a.action, a.duty),
            "power": lambda: self.power(a.target, clear=a.clear),
            "quiet": lambda: self.change("quiet", mode=a.mode),
            "curtail": lambda: self.change("curtail", mode=a.mode),
            "resume": lambda: self.change("resume"),
            "tune": lambda: self.change("tune", slot=a.slot),
            "reset": lambda: self.change("reset_slot", slot=a.slot),
            "prices": lambda: self.change(
                "prices", electricity_per_kwh=a.electricity, hashprice_per_th_day=a.hashprice
            ),
            "profit": lambda: self.change("profit", on=a.mode == "on"),
            "watch": lambda: self.watch(a.interval, a.count),
            "events": lambda: self.events(a.limit, follow=a.follow, count=a.count),
            "codes": lambda: self.codes(a.code),
            "pools": lambda: self.pools(a.action, a.pool),
        }
        if a.command == "swap":
            if a.action == "cancel":
                return self.change("cancel_swap", slot=a.slot)
            return self.swap_prepare(a.slot, wait=not a.no_wait, wait_s=a.wait)
        return simple[a.command]()

    def codes(self, code: int | None) -> int:
        """Answered here, without the agent: a technician reads a code off a fleet tool."""
        entries = [c for c in CATALOG if code is None or c.code == code]
        if not entries:
            raise CliError(f"no fault code {code}; `hashbay codes` lists them", EXIT_USAGE)
        self.emit([c.to_json() for c in entries], lambda: render.codes_text(entries))
        return EXIT_OK

    def pools(self, action: str, pools: list[dict[str, Any]]) -> int:
        if action == "set":
            if not pools:
                raise CliError("pools set needs at least one POOL (url=... user=...)", EXIT_USAGE)
            return self.change("pools", pools=pools)
        if pools:
            raise CliError(f"pools {action} takes no POOL", EXIT_USAGE)
        if action == "reset":
            return self.change("pools_reset")
        return self.read("status", None, lambda r: render.pools_text(r["miner"].get("pools")))

    def slots(self, slots: list[dict[str, Any]]) -> str:
        return render.slots_table(swap_order(slots) if self.args.swap_order else slots)

    def power(self, target: float | None, *, clear: bool) -> int:
        if target is not None:
            return self.change("power_target", watts=target)
        if clear:
            return self.change("power_target_clear")
        return self.read("fans", None, render.fans_text)

    def fans(self, action: str, duty: float | None) -> int:
        if action == "override":
            if duty is None:
                raise CliError("fans override needs a duty, e.g. `fans override 60%`", EXIT_USAGE)
            return self.change("fan_override", duty=duty)
        if duty is not None:
            raise CliError(f"fans {action} takes no duty", EXIT_USAGE)
        if action == "auto":
            return self.change("fan_auto")
        return self.read("fans", None, render.fans_text)

    def swap_prepare(self, slot: int, *, wait: bool, wait_s: float) -> int:
        """Prepare, then follow the slot until its power is off (or it faults)."""
        with self.client() as client:
            if wait:
                client.call("subscribe")
            result = client.call("command", {"command": "prepare_swap", "slot": slot})
            state = result.get("state") if isinstance(result, dict) else None
            self.progress(
                {"slot": slot, "state": state},
                f"Slot {slot}: {state} — draining the module and powering it off...",
            )
            if not wait or state == "safe_to_remove":
                return self.swap_done(slot, state)
            return self.follow_swap(client, slot, state, wait_s)

    def follow_swap(self, client: ControlClient, slot: int, state: Any, wait_s: float) -> int:
        deadline = time.monotonic() + wait_s
        next_check = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            frame = client.next_event(min(1.0, max(0.0, deadline - time.monotonic())))
            if frame is not None and frame.event.get("slot") == slot:
                kind = frame.event.get("kind")
                if kind in ("safe_to_remove", "fault", "removed", "swap_cancelled"):
                    return self.swap_done(slot, kind, frame.event.get("message"))
                self.progress(dict(frame.event), f"Slot {slot}: {frame.event.get('message')}")
            if time.monotonic() >= next_check:  # events can be lost to a slow reader
                next_check = time.monotonic() + 1.0
                detail = client.call("slot", {"slot": slot})
                now = (detail.get("status") or {}).get("state")
                if now in ("safe_to_remove", "fault", "empty"):
                    return self.swap_done(slot, now)
                if now != state:
                    state = now
                    self.progress({"slot": slot, "state": now}, f"Slot {slot}: {now}...")
        raise CliError(
            f"slot {slot} is still {state} after {wait_s:g} s; do not remove it — check "
            f"`hashbay slot {slot}`",
            EXIT_TEMPFAIL,
        )

    def swap_done(self, slot: int, outcome: Any, message: Any = None) -> int:
        if outcome == "safe_to_remove":
            text = f"Slot {slot}: power is off — safe to remove the module (its LED blinks)."
            code = EXIT_OK
        elif outcome in ("removed", "empty"):
            text = f"Slot {slot}: the module has been removed."
            code = EXIT_OK
        elif outcome == "swap_cancelled":
            text = f"Slot {slot}: the swap was cancelled; the module stays in service."
            code = EXIT_FAILED
        elif outcome == "fault":
            why = f": {message}" if message else ""
            text = f"Slot {slot}: FAULT{why}. Do NOT remove the module; see `hashbay slot {slot}`."
            code = EXIT_FAILED
        else:
            text = f"Slot {slot}: {outcome} — preparing; run `hashbay slot {slot}` to follow it."
            code = EXIT_OK
        self.emit(
            {"slot": slot, "outcome": outcome, "safe_to_remove": outcome == "safe_to_remove"},
            text,
        )
        return code

    def emit_event(self, event: dict[str, Any]) -> None:
        self.emit(event, render.event_line(event))

    def progress(self, data: dict[str, Any], text: str) -> None:
        self.emit({"progress": data}, text)

    def watch(self, interval_s: float, count: int | None) -> int:
        frames = 0
        clear = self.out.isatty() and not self.args.json
        with self.client() as client, _until_interrupted():
            while count is None or frames < count:
                if frames:
                    time.sleep(interval_s)
                result = client.call("status")
                if clear:
                    self.out.write("\x1b[H\x1b[2J")
                frame = f"{time.strftime('%H:%M:%S')}  {render.status_text(result)}\n"
                self.emit(result, frame)
                frames += 1
        return EXIT_OK

    def events(self, limit: int, *, follow: bool, count: int | None) -> int:
        with self.client() as client, _until_interrupted():
            if follow:
                client.call("subscribe")
            recent = client.call("events", {"limit": limit}).get("events", [])
            for event in recent:
                self.emit_event(event)
            seen = 0
            while follow and (count is None or seen < count):
                frame = client.next_event(3600.0)
                if frame is None:
                    continue
                if frame.dropped:
                    print(
                        f"hashbay: {frame.dropped} events lost (reading too slowly)",
                        file=sys.stderr,
                    )
                self.emit_event(dict(frame.event))
                seen += 1
        return EXIT_OK


@contextlib.contextmanager
def _until_interrupted() -> Iterator[None]:
    """Ctrl-C ends a live view normally."""
    with contextlib.suppress(KeyboardInterrupt):
        yield


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "fleet":  # the farm's broker, not this controller's agent
        return fleet.run(args, out or sys.stdout)
    try:
        return Cli(args, out or sys.stdout).run()
    except CliError as exc:
        print(f"hashbay: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `hashbay events -f | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
