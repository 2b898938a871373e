"""Fixtures shared by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hashbay.tools.broker import Broker

from .support import NotifyListener, write_config


@pytest.fixture
def notify_listener(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


@pytest.fixture
def sim_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "agent.toml")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a free loopback port, for this test only."""
    server = Broker(tmp_path / "broker")
    server.start()
    yield server
    server.stop()
