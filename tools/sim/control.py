"""Live fault injection: a line-based Unix socket served by the running simulated rig.

One request per line (`inject <fault>`, `status`, `faults`), one reply line: `ok …` or
`error: …`. Requests come from outside, so lines are bounded and every command is parsed
and range-checked before it reaches the rig; a bad one never disturbs the rig.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from pathlib import Path

from hashbay.tools.sim.faults import FaultError, help_text, parse
from hashbay.tools.sim.rig import SimRig

MAX_LINE = 512
SHUTDOWN_POLL_S = 0.05  # how often serving checks for close(); it bounds the agent's shutdown
SOCKET_NAME = "sim.sock"


def answer(rig: SimRig, line: str) -> str:
    """The reply to one request line."""
    verb, _, rest = line.strip().partition(" ")
    if verb == "inject":
        try:
            command = parse(rest)
            rig.apply(command)
        except (FaultError, ValueError) as exc:
            return f"error: {exc}"
        return f"ok {command}"
    if verb == "status":
        return "ok " + json.dumps(rig.status())
    if verb == "faults":
        return "ok " + json.dumps(help_text())
    return "error: unknown request; use inject <fault>, status or faults"


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.connection.settimeout(5.0)
        try:
            while True:
                raw = self.rfile.readline(MAX_LINE + 1)
                if not raw:
                    return
                if len(raw) > MAX_LINE:
                    self.wfile.write(b"error: request line too long\n")
                    return
                if not raw.endswith(b"\n"):
                    self.wfile.write(b"error: request line does not end with a newline\n")
                    return
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.wfile.write(b"error: request is not UTF-8\n")
                    return
                self.wfile.write(answer(self.server.rig, line).encode() + b"\n")
        except (TimeoutError, OSError):
            return


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, rig: SimRig) -> None:
        self.rig = rig
        super().__init__(path, _Handler)


class ControlServer:
    """Serves `answer` on a Unix socket (mode 0660) until closed."""

    def __init__(self, rig: SimRig, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.path = path
        self._server = _Server(str(path), rig)
        os.chmod(path, 0o660)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(SHUTDOWN_POLL_S,),
            name="sim-control",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)


def request(path: Path, line: str, timeout_s: float = 5.0) -> str:
    """Send one request to a running rig; returns the reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(line.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply.decode().strip()
