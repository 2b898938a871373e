"""`hashbay-sim`: inject faults into, and look at, a running simulated rig.

hashbay-sim inject fan-stall 1
hashbay-sim status
hashbay-sim faults
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hashbay.tools.sim.control import SOCKET_NAME, request
from hashbay.tools.sim.faults import help_text

DEFAULT_SOCKET = Path(os.environ.get("HASHBAY_SIM_SOCKET", f"/run/hashbay/{SOCKET_NAME}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hashbay-sim",
        description="Fault injection for the simulated rig the agent runs on.",
        epilog="faults:\n" + help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--socket",
        type=Path,
        default=DEFAULT_SOCKET,
        help=f"the rig's control socket (default {DEFAULT_SOCKET}; env HASHBAY_SIM_SOCKET)",
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    inject = sub.add_parser("inject", help="apply a fault now")
    inject.add_argument("fault", nargs="+", help="a fault command, e.g. fan-stall 1")
    sub.add_parser("status", help="the rig as the simulator sees it (JSON)")
    sub.add_parser("faults", help="list the fault commands")
    args = parser.parse_args(argv)
    if args.verb == "faults":
        print(help_text())
        return 0
    line = "status" if args.verb == "status" else "inject " + " ".join(args.fault)
    try:
        reply = request(args.socket, line)
    except OSError as exc:
        reason = exc.strerror or exc
        print(
            f"hashbay-sim: cannot reach the simulated rig at {args.socket} ({reason}); "
            "is the agent running on the simulated rig?",
            file=sys.stderr,
        )
        return 69
    if reply.startswith("error: "):
        print(f"hashbay-sim: {reply[7:]}", file=sys.stderr)
        return 2
    body = reply[3:]
    print(json.dumps(json.loads(body), indent=2) if args.verb == "status" else body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
