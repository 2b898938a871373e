"""sd_notify against a real datagram socket, as systemd would hand it over."""

from __future__ import annotations

import os
import socket
import uuid

from hashbay.agent.daemon.sdnotify import SystemdNotifier

from .support import NotifyListener


def test_ready_status_watchdog_and_stopping_arrive_as_systemd_expects(
    notify_listener: NotifyListener,
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(notify_listener.path)})
    assert notifier.ready("3 slots hashing")
    assert notifier.status("2 slots hashing")
    assert notifier.watchdog()
    assert notifier.stopping("bye")
    notifier.close()
    notify_listener.wait_for("STOPPING")
    assert notify_listener.messages() == [
        {"READY": "1", "STATUS": "3 slots hashing"},
        {"STATUS": "2 slots hashing"},
        {"WATCHDOG": "1"},
        {"STOPPING": "1", "STATUS": "bye"},
    ]


def test_abstract_namespace_socket_is_supported() -> None:
    name = f"hashbay-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready("up")
        server.settimeout(1)
        assert server.recv(100) == b"READY=1\nSTATUS=up"
    finally:
        server.close()


def test_without_systemd_everything_is_a_quiet_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval_s is None


def test_watchdog_interval_only_for_this_process() -> None:
    mine = SystemdNotifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval_s == 4.0
    other = SystemdNotifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval_s is None
    garbage = SystemdNotifier({"WATCHDOG_USEC": "soon"})
    assert garbage.watchdog_interval_s is None


def test_a_vanished_socket_does_not_raise(notify_listener: NotifyListener) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(notify_listener.path)})
    notify_listener.close()
    notify_listener.path.unlink()
    assert not notifier.watchdog()
