"""The fleet view's HTML page: built from a 1,000-miner farm's traffic, then loaded in a
real headless chromium, which is asked what it shows (its DOM) and how it looks (a
screenshot that must not be blank)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from hashbay.tools.bench.fleet_traffic import FarmTraffic
from hashbay.tools.fleet import html
from hashbay.tools.fleet.model import FleetModel

from .support import Clock

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MINERS = 1000


def farm_page(miners: int, seconds: int, refresh_s: float | None = None) -> tuple[str, FleetModel]:
    """A bench-style run in simulated time: the farm's traffic straight into the model,
    sampled every 10 s as `--every 10s` would."""
    clock = Clock(1_750_000_000.0)
    start = clock.now
    traffic = FarmTraffic(miners, prefix="farm", wall=clock)
    model = FleetModel("farm", clock=clock, wall=clock)
    for message in traffic.retained():
        model.ingest(message.topic, message.payload)
    for second in range(1, seconds + 1):
        clock.now = start + second
        for message in traffic.due(float(second)):
            model.ingest(message.topic, message.payload)
        if second % 10 == 0:
            model.sample(model.summary())
    queue = model.swap_queue()
    return html.page(model, model.summary(queue), queue, refresh_s=refresh_s, now=clock), model


def test_what_comes_from_the_broker_is_escaped_not_markup() -> None:
    clock = Clock()
    model = FleetModel("farm", clock=clock, wall=clock)
    name = "<script>alert(1)"  # a topic level holds no '/'; the rest it may
    model.ingest(f"farm/{name}/status", b"online")
    slot = b'{"state": "fault", "serial": "<b>x</b>", "detail": "<img src=x onerror=alert(1)>"}'
    model.ingest(f"farm/{name}/slot/0/state", slot)
    queue = model.swap_queue()
    text = html.page(model, model.summary(queue), queue)
    assert "<script" not in text and "<img" not in text and "<b>x" not in text
    assert "&lt;script&gt;alert(1)" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_the_page_is_replaced_in_one_rename(tmp_path: Path) -> None:
    path = tmp_path / "farm.html"
    html.write_atomically(path, "old")
    html.write_atomically(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["farm.html"]


def test_the_page_needs_nothing_from_outside() -> None:
    text, _ = farm_page(20, 60, refresh_s=10)
    assert '<meta http-equiv="refresh" content="10">' in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<script" not in text and "<link" not in text


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (tools/run test installs it)"
)
def test_chromium_shows_a_thousand_miner_farm(tmp_path: Path) -> None:
    text, model = farm_page(MINERS, 240)
    page = tmp_path / "farm.html"
    html.write_atomically(page, text)
    queue = model.swap_queue()
    assert queue  # the farm's load always has modules to swap

    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert "<title>hashbay fleet: farm</title>" in dom
    assert re.search(r'data-tile="Miners">Miners<b>1000</b>', dom)
    assert re.search(rf'data-tile="Swap queue">Swap queue<b>{len(queue)}</b>', dom)
    rows = re.findall(r"<tr class=\"(needs_service|fault|degrading|low_health) ", dom)
    assert len(rows) == min(len(queue), html.QUEUE_ROWS)
    first = queue[0]
    assert f'<td>{first.miner}</td><td class="num">{first.slot}</td>' in dom
    charts = re.findall(r"<title>(Farm hashrate|Farm power|Modules needing a swap)</title>", dom)
    assert len(charts) == 3
    assert dom.count('class="spark"') > 1.5 * MINERS  # hashrate and temperature per miner
    assert dom.count("<polyline") >= 3 + 1.5 * MINERS

    shot = tmp_path / "farm.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1600", page.as_uri())
    width, height, pixels = read_png(shot.read_bytes())
    assert (width, height) == (1400, 1600)
    colours = {pixels[i : i + 3] for i in range(0, len(pixels), 3 * 7)}
    assert len(colours) > 50  # text, tiles, lines: not a blank page
    background = pixels[:3]
    drawn = sum(1 for i in range(0, len(pixels), 3 * 7) if pixels[i : i + 3] != background)
    assert drawn / (len(pixels) / (3 * 7)) > 0.05


def chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # tests may run as root
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def read_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and RGB pixels of an 8-bit RGB or RGBA PNG (what chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rgb = bytearray()
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        line = unfilter(
            raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, channels
        )
        rgb += line if channels == 3 else b"".join(line[x : x + 3] for x in range(0, stride, 4))
        previous = line
    return width, height, bytes(rgb)


def unfilter(kind: int, line: bytearray, previous: bytearray, channels: int) -> bytearray:
    """Undo one scanline's PNG filter (None, Sub, Up, Average, Paeth)."""
    for x in range(len(line)):
        left = line[x - channels] if x >= channels else 0
        up = previous[x]
        corner = previous[x - channels] if x >= channels else 0
        if kind == 1:
            line[x] = (line[x] + left) & 0xFF
        elif kind == 2:
            line[x] = (line[x] + up) & 0xFF
        elif kind == 3:
            line[x] = (line[x] + (left + up) // 2) & 0xFF
        elif kind == 4:
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            guess = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[x] = (line[x] + guess) & 0xFF
    return line
