"""A control-socket peer for the attack tests, run as another user in a forked child.

Opens one connection per planned send, sends its bytes, reports what came back within a
short wait (a JSON line per connection), then holds every connection open until the test
releases it, so the test can look at the agent while they are held. Only plain blocking
calls: it runs in a child forked from pytest.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, TextIO

from hashbay.agent.interfaces.control_protocol import FrameDecoder

WAIT_S = 0.5


def first_reply(sock: socket.socket, wait_s: float) -> Any:
    decoder = FrameDecoder()
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except OSError as exc:
            return {"closed": exc.__class__.__name__}
        if not data:
            return {"closed": "eof"}
        for message in decoder.feed(data):
            return message
    return None


def hold_connections(path: str, sends: list[bytes], out: TextIO, release_fd: int) -> None:
    """Open and send on every connection first, then collect the first replies: the
    agent sees them all at once."""
    held: list[socket.socket] = []
    for data in sends:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            sock.sendall(data)
        except OSError as exc:
            print(json.dumps({"connect": exc.__class__.__name__}), file=out, flush=True)
            sock.close()
            continue
        held.append(sock)
    deadline = time.monotonic() + WAIT_S
    for sock in held:
        left = max(deadline - time.monotonic(), 0.01)
        print(json.dumps({"reply": first_reply(sock, left)}), file=out, flush=True)
    print(json.dumps({"holding": len(held)}), file=out, flush=True)
    os.read(release_fd, 1)  # returns when the test closes its end


class PeerAs:
    """`hold_connections` in a child forked and dropped to uid/gid `user`, no other groups."""

    def __init__(self, user: int, path: str, sends: list[bytes]) -> None:
        results_r, results_w = os.pipe()
        release_r, self._release_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(results_r)
                os.close(self._release_w)
                os.setgroups([])
                os.setgid(user)
                os.setuid(user)
                with os.fdopen(results_w, "w") as out:
                    hold_connections(path, sends, out, release_r)
            finally:
                os._exit(0)
        os.close(results_w)
        os.close(release_r)
        self._results = os.fdopen(results_r)

    def results(self) -> list[dict[str, Any]]:
        """One entry per connection, once all are open and held."""
        lines = []
        while True:
            line = self._results.readline()
            if not line:
                raise AssertionError("the peer ended early")
            lines.append(json.loads(line))
            if "holding" in lines[-1]:
                return lines[:-1]

    def release(self) -> None:
        os.close(self._release_w)
        os.waitpid(self.pid, 0)
        self._results.close()
