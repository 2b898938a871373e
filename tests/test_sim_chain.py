"""The emulated chain against the protocol as published: golden frames in, bytes checked by
hand out (no use of the driver's decoder), and nonces checked with hashlib directly."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from hashbay.tools.sim import physics
from hashbay.tools.sim.chain import SimChain, SimChip

INACTIVE = bytes.fromhex("55AA53050000 03")
READ_CHIP_ID = bytes.fromhex("55AA52050000 0A")
VERSION_MASK = bytes.fromhex("55AA510900A49000FFFF 1C")
TICKET_256 = bytes.fromhex("55AA51090014000000FF 08")
FAST_UART = bytes.fromhex("55AA510900281130020003")


def crc5(data: bytes) -> int:
    """Bitwise CRC5 (poly 0x05, init 0x1F), written out plainly for the test."""
    crc = 0x1F
    for byte in data:
        for bit in range(7, -1, -1):
            top = (crc >> 4) & 1
            crc = (crc << 1) & 0x1F
            if top ^ ((byte >> bit) & 1):
                crc ^= 0x05
    return crc


def command(header: int, data: bytes) -> bytes:
    body = bytes([header, len(data) + 3]) + data
    return b"\x55\xaa" + body + bytes([crc5(body)])


def set_address(address: int) -> bytes:
    return command(0x40, bytes([address, 0]))


def pll(fbdiv: int, refdiv: int, postdiv1: int, postdiv2: int) -> bytes:
    """Register 0x08 value: VCO range, FBDIV, REFDIV, post dividers (minus one)."""
    vco = 0x50 if 25 * fbdiv / refdiv >= 2400 else 0x40
    return bytes([vco, fbdiv, refdiv, ((postdiv1 - 1) << 4) | (postdiv2 - 1)])


# 125, 200, 300, 400, 500 MHz: freq = 25 * FBDIV / (REFDIV * POSTDIV1 * POSTDIV2)
RAMP = [
    pll(160, 2, 4, 4),
    pll(160, 2, 5, 2),
    pll(192, 2, 4, 2),
    pll(192, 2, 3, 2),
    pll(200, 2, 5, 1),
]


def replies(raw: bytes) -> list[bytes]:
    assert len(raw) % 11 == 0, raw.hex()
    frames = [raw[i : i + 11] for i in range(0, len(raw), 11)]
    for frame in frames:
        assert frame[:2] == b"\xaa\x55"
        # CRC5 over everything after the preamble, flag bits included, leaves zero.
        assert crc5(frame[2:]) == 0
    return frames


def make_chain(count: int = 8, model: str = "BM1368", seed: int = 7) -> SimChain:
    spec = physics.CHIP_SPECS[model]
    rng = random.Random(seed)
    chain = SimChain(spec, physics.make_silicon(spec, count, rng), rng)
    chain.set_powered(True)
    return chain


def test_unpowered_chain_is_silent() -> None:
    chain = make_chain()
    chain.set_powered(False)
    chain.receive(READ_CHIP_ID)
    assert chain.take_output() == b""


@pytest.mark.parametrize(
    ("model", "chip_id"), [("BM1366", 0x1366), ("BM1368", 0x1368), ("BM1370", 0x1370)]
)
def test_every_chip_answers_the_chip_id_broadcast(model: str, chip_id: int) -> None:
    chain = make_chain(5, model)
    chain.receive(READ_CHIP_ID)
    frames = replies(chain.take_output())
    assert len(frames) == 5
    for frame in frames:
        assert frame[2:4] == chip_id.to_bytes(2, "big")
        assert frame[10] & 0xE0 == 0  # a register reply, not a nonce


def test_enumeration_assigns_addresses_in_chain_order() -> None:
    chain = make_chain(8)
    interval = 256 // 8
    chain.receive(INACTIVE + b"".join(set_address(i * interval) for i in range(8)))
    chain.receive(READ_CHIP_ID)
    frames = replies(chain.take_output())
    assert [f[6] for f in frames] == [i * interval for i in range(8)]
    assert [chip.address for chip in chain.chips] == [i * interval for i in range(8)]


def test_register_write_to_one_chip_and_read_back_by_address() -> None:
    chain = make_chain(4)
    chain.receive(INACTIVE + b"".join(set_address(i * 64) for i in range(4)))
    pll_125 = command(0x41, bytes([128, 0x08]) + RAMP[0])
    chain.receive(pll_125 + command(0x42, bytes([128, 0x08])))
    (frame,) = replies(chain.take_output())
    assert frame[2:6] == RAMP[0]
    assert frame[6] == 128 and frame[7] == 0x08
    assert [c.freq_mhz for c in chain.chips] == [50.0, 50.0, 125.0, 50.0]


def test_a_frame_with_a_bad_crc_is_ignored() -> None:
    chain = make_chain(3)
    broken = bytearray(READ_CHIP_ID)
    broken[-1] ^= 0x01
    chain.receive(bytes(broken))
    assert chain.take_output() == b""
    chain.receive(READ_CHIP_ID)
    assert len(replies(chain.take_output())) == 3


def test_baud_switch_and_registers_are_followed() -> None:
    chain = make_chain(2)
    chain.receive(FAST_UART + VERSION_MASK + TICKET_256)
    assert chain.baud == 1_000_000
    assert all(c.version_mask == 0x1FFF_E000 for c in chain.chips)
    assert all(c.ticket_difficulty == 256 for c in chain.chips)


def test_abrupt_pll_jump_hangs_a_chip_until_reset() -> None:
    chain = make_chain(2)
    chain.receive(command(0x51, bytes([0, 0x08]) + bytes.fromhex("50E00160")))  # 50 -> 800
    assert all(c.hung for c in chain.chips)
    chain.receive(READ_CHIP_ID)
    assert chain.take_output() == b""
    chain.set_powered(False)
    chain.set_powered(True)
    chain.receive(READ_CHIP_ID)
    assert len(replies(chain.take_output())) == 2


def job_frame(
    job_id: int, prev: bytes, merkle: bytes, ntime: int, nbits: int, version: int
) -> bytes:
    def words_reversed(h: bytes) -> bytes:
        return b"".join(h[i : i + 4] for i in range(28, -4, -4))

    data = (
        bytes([job_id << 3, 1])
        + bytes(4)
        + struct.pack("<II", nbits, ntime)
        + words_reversed(merkle)
        + words_reversed(prev)
        + struct.pack("<I", version)
    )
    body = bytes([0x21, 0x56]) + data
    crc = 0xFFFF
    for byte in body:  # CRC-16/CCITT-FALSE, bitwise
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return b"\x55\xaa" + body + crc.to_bytes(2, "big")


def ready_chain(count: int = 4) -> SimChain:
    """Enumerated, version rolling on, ticket difficulty 256, ramped to 500 MHz."""
    chain = make_chain(count)
    chain.receive(INACTIVE + b"".join(set_address(i * (256 // count)) for i in range(count)))
    chain.receive(VERSION_MASK + TICKET_256)
    for value in RAMP:
        chain.receive(command(0x51, bytes([0, 0x08]) + value))
    assert all(c.freq_mhz == 500.0 and not c.hung for c in chain.chips)
    chain.take_output()
    return chain


def run(chain: SimChain, seconds: float, chip_v: float = 0.32, temp_c: float = 60.0) -> None:
    for _ in range(int(seconds / 0.5)):
        chain.step(0.5, chip_v, lambda _chip: temp_c)


PREV = hashlib.sha256(b"prev").digest()
MERKLE = hashlib.sha256(b"merkle").digest()


def test_nonces_are_real_proof_of_work_with_rolled_versions() -> None:
    chain = ready_chain(4)
    chain.receive(job_frame(5, PREV, MERKLE, 0x6767_8B5C, 0x1703_0ECD, 0x2000_0000))
    run(chain, 30)
    frames = replies(chain.take_output())
    assert len(frames) > 50
    good = 0
    for frame in frames:
        assert frame[10] & 0x80, "nonce flag"
        assert frame[7] >> 4 == 5  # job id
        version_bits = int.from_bytes(frame[8:10], "big")
        version = 0x2000_0000 | (version_bits << 13)
        head = (
            struct.pack("<I", version)
            + PREV
            + MERKLE
            + struct.pack("<II", 0x6767_8B5C, 0x1703_0ECD)
        )
        digest = hashlib.sha256(hashlib.sha256(head + frame[2:6]).digest()).digest()
        good += digest[31] == 0  # one hash in 256: the top byte of the LE value is zero
        wire = int.from_bytes(frame[2:6], "big")
        assert (wire >> 17) & 0xFF in {0, 64, 128, 192}  # the reporting chip's address
    assert good >= len(frames) * 0.99  # 500 MHz at 0.32 V is stable
    assert len({f[8:10] for f in frames}) > 10  # versions really roll


def test_nonce_rate_matches_the_work_each_nonce_stands_for() -> None:
    chain = ready_chain(4)
    chain.receive(job_frame(1, PREV, MERKLE, 1, 2, 0x2000_0000))
    run(chain, 200)
    nonces = len(replies(chain.take_output()))
    expected_hs = 4 * 500e6 * physics.CHIP_SPECS["BM1368"].small_cores
    measured_hs = nonces * 256 * 2**32 / 200
    assert measured_hs == pytest.approx(expected_hs, rel=0.15)


def test_overclocked_chip_returns_wrong_nonces_and_degradation_creeps_up() -> None:
    chain = ready_chain(4)
    chain.receive(job_frame(2, PREV, MERKLE, 1, 2, 0x2000_0000))
    for value in (pll(192, 2, 4, 1), pll(224, 2, 4, 1), pll(192, 1, 6, 1)):  # 600, 700, 800
        chain.receive(command(0x41, bytes([0, 0x08]) + value))
    assert chain.chips[0].freq_mhz == 800.0 and not chain.chips[0].hung
    run(chain, 60)
    overclocked: SimChip = chain.chips[0]
    assert overclocked.wrong_nonces > 0.5 * overclocked.nonces
    assert sum(c.wrong_nonces for c in chain.chips[1:]) <= 2
    chain.take_output()
    aging = chain.chips[1]
    aging.degradation_per_s = 0.5 / 3600  # half-way to dead in an hour
    run(chain, 3600)
    assert aging.degradation == pytest.approx(0.5, abs=0.01)
    assert aging.wrong_nonces > 0


def test_dead_chip_neither_answers_nor_hashes() -> None:
    chain = ready_chain(4)
    chain.chips[2].dead = True
    chain.receive(READ_CHIP_ID)
    assert [f[6] for f in replies(chain.take_output())] == [0, 64, 192]
    chain.receive(job_frame(3, PREV, MERKLE, 1, 2, 0x2000_0000))
    run(chain, 30)
    chips = {(int.from_bytes(f[2:6], "big") >> 17) & 0xFF for f in replies(chain.take_output())}
    assert 128 not in chips and chips
