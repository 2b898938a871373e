"""BM13xx frames against the published golden frames, and the decoders against any bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.drivers.bm13xx import frames, registers
from hashbay.drivers.bm13xx.crc import crc5, crc5_bits, crc16
from hashbay.drivers.bm13xx.frames import (
    Cmd,
    Command,
    CommandDecoder,
    Job,
    NonceReply,
    RegisterReply,
    ReplyDecoder,
)
from hashbay.drivers.bm13xx.registers import Reg
from hashbay.drivers.bm13xx.work import hash_value, header, sha256d


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


GOLDEN = {
    "55 AA 52 05 00 00 0A": frames.read_register(Reg.CHIP_ID),
    "55 AA 53 05 00 00 03": frames.chain_inactive(),
    "55 AA 40 05 00 00 1C": frames.set_address(0),
    "55 AA 51 09 00 80 00 00 00 00 1C": frames.write_register(0x80, 0),
    "55 AA 51 09 00 A4 90 00 FF FF 1C": frames.write_register(
        Reg.VERSION_MASK, registers.version_mask_value(0x1FFF_E000)
    ),
    "55 AA 51 09 00 28 11 30 02 00 03": frames.write_register(
        Reg.FAST_UART, registers.FAST_UART_VALUE
    ),
    "55 AA 51 09 00 14 00 00 00 FF 08": frames.write_register(
        Reg.TICKET_MASK, registers.ticket_mask_value(256)
    ),
}


@pytest.mark.parametrize(("golden", "encoded"), GOLDEN.items())
def test_encoders_produce_the_published_golden_frames(golden: str, encoded: bytes) -> None:
    assert encoded == hexbytes(golden)


def test_crc16_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1


def test_published_chip_id_reply_decodes() -> None:
    # BM1370 answering the chip-id read (mujina's capture).
    replies = ReplyDecoder().feed(hexbytes("AA 55 13 70 00 00 00 00 00 00 10"))
    assert replies == [RegisterReply(value=0x1370_0000, chip=0, register=0)]
    assert registers.chip_id_of(0x1370_0000) == 0x1370


def test_published_nonce_reply_decodes() -> None:
    (reply,) = ReplyDecoder().feed(hexbytes("AA 55 18 00 A6 40 02 99 22 F9 91"))
    assert isinstance(reply, NonceReply)
    assert reply.nonce == 0x40A6_0018
    assert reply.job_id == 9
    assert reply.small_core == 9
    assert reply.version_bits << 13 == 0x045F_2000
    assert reply.core == 0x18 >> 1
    assert reply.chip == ((0x18 & 1) << 7) | (0x00 >> 1)


def test_pll_example_from_the_notes() -> None:
    assert registers.decode_pll(0x40A0_0241).freq_mhz == 200.0
    for mhz in (50, 200, 400, 490, 525, 600, 800):
        assert registers.pll_for(mhz).freq_mhz == pytest.approx(mhz, abs=1.0)


@pytest.mark.parametrize(("difficulty", "value"), [(256, 0xFF), (512, 0x80FF), (1024, 0xC0FF)])
def test_ticket_mask_encoding(difficulty: int, value: int) -> None:
    assert registers.ticket_mask_value(difficulty) == value
    assert registers.ticket_difficulty(value) == difficulty


def test_genesis_block_hash() -> None:
    merkle_display = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    job = Job(0, 1, bytes(32), bytes.fromhex(merkle_display)[::-1], 1231006505, 0x1D00FFFF)
    digest = sha256d(header(job, 1, 2083236893))
    expected = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
    assert digest[::-1].hex() == expected
    assert hash_value(digest) < 1 << 224  # difficulty 1


def sample_job(job_id: int = 3) -> Job:
    return Job(
        job_id, 0x2000_0000, bytes(range(32)), bytes(range(32, 64)), 0x6767_8B5C, 0x170E_3AB4
    )


def test_job_frame_layout() -> None:
    frame = frames.job_frame(sample_job())
    assert frame[:4] == hexbytes("55 AA 21 56")
    assert len(frame) == 88
    assert frame[4] == 3 << 3  # job id in bits 6..3
    assert frame[5] == 1
    assert frame[10:18] == hexbytes("B4 3A 0E 17 5C 8B 67 67")
    # Hashes go out as their eight words in reverse order.
    assert frame[18:22] == bytes(range(60, 64))
    assert frame[82:86] == hexbytes("00 00 00 20")
    assert crc16(frame[2:-2]) == int.from_bytes(frame[-2:], "big")


def test_command_decoder_round_trips_commands_and_jobs() -> None:
    stream = (
        frames.chain_inactive()
        + frames.set_address(4)
        + frames.write_register(0x08, 0x50E0_0261, chip=4)
        + frames.read_register(0x14)
        + frames.job_frame(sample_job(7))
    )
    decoded = CommandDecoder().feed(stream)
    assert decoded == [
        Command(Cmd.CHAIN_INACTIVE, True, 0, 0, None),
        Command(Cmd.SET_ADDRESS, False, 4, 0, None),
        Command(Cmd.WRITE_REGISTER, False, 4, 0x08, 0x50E0_0261),
        Command(Cmd.READ_REGISTER, True, 0, 0x14, None),
        sample_job(7),
    ]


def test_a_chip_ignores_a_frame_with_a_bad_crc_and_keeps_listening() -> None:
    decoder = CommandDecoder()
    bad_job = bytearray(frames.job_frame(sample_job()))
    bad_job[40] ^= 0x01
    bad_cmd = bytearray(frames.set_address(2))
    bad_cmd[-1] ^= 0x01
    good = frames.set_address(6)
    assert decoder.feed(bytes(bad_job) + bytes(bad_cmd) + good) == [
        Command(Cmd.SET_ADDRESS, False, 6, 0, None)
    ]
    assert decoder.stats.crc_errors == 2


def test_reply_decoder_resynchronises_after_garbage_drops_and_bad_crc() -> None:
    one = frames.nonce_reply(0x1234_5678, 5, 2, 0x00FF)
    two = frames.register_reply(0x1368_0000, 8, 0)
    three = frames.nonce_reply(0x0BAD_F00D, 1, 15, 0)
    corrupted = bytearray(one)
    corrupted[5] ^= 0x10
    truncated = two[:7]  # bytes lost on the line
    stream = b"\x00\xff\xaa" + bytes(corrupted) + truncated + b"\x55\xaa\x55" + three + two
    decoder = ReplyDecoder()
    replies = [r for i in range(0, len(stream), 3) for r in decoder.feed(stream[i : i + 3])]
    assert replies == [
        NonceReply(0x0BAD_F00D, (0x0DF0_AD0B >> 17) & 0xFF, 0x0DF0_AD0B >> 25, 15, 1, 0, 0),
        RegisterReply(0x1368_0000, 8, 0),
    ]
    assert decoder.stats.crc_errors >= 1
    assert decoder.stats.frames == 2


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_reply_decoder_never_raises_on_any_bytes(data: bytes, chunk: int) -> None:
    decoder = ReplyDecoder()
    out = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i : i + chunk])
    assert decoder.stats.frames == len(out)
    for reply in out:  # anything it accepts carried a valid CRC
        assert isinstance(reply, RegisterReply | NonceReply)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=90))
def test_command_decoder_never_raises_on_any_bytes(data: bytes, chunk: int) -> None:
    decoder = CommandDecoder()
    for i in range(0, len(data), chunk):
        for item in decoder.feed(data[i : i + chunk]):
            assert isinstance(item, Command | Job)


@given(
    nonce=st.integers(0, 2**32 - 1),
    job_id=st.integers(0, 15),
    small_core=st.integers(0, 15),
    version_bits=st.integers(0, 0xFFFF),
    midstate=st.integers(0, 255),
    # Noise without 0xAA: with it, noise could end in a preamble that, one time in 32
    # (a 5-bit CRC), makes a valid frame of the real frame's first bytes.
    noise=st.binary(max_size=20).filter(lambda b: 0xAA not in b),
)
def test_nonce_reply_round_trip_even_after_noise(
    nonce: int, job_id: int, small_core: int, version_bits: int, midstate: int, noise: bytes
) -> None:
    frame = frames.nonce_reply(nonce, job_id, small_core, version_bits, midstate)
    replies = ReplyDecoder().feed(noise + frame)
    wire = struct.unpack(">I", struct.pack("<I", nonce))[0]
    assert replies[-1] == NonceReply(
        nonce, (wire >> 17) & 0xFF, wire >> 25, small_core, job_id, version_bits, midstate
    )


@given(
    register=st.integers(0, 255),
    value=st.integers(0, 2**32 - 1),
    chip=st.one_of(st.none(), st.integers(0, 255)),
)
def test_register_write_round_trip(register: int, value: int, chip: int | None) -> None:
    (command,) = CommandDecoder().feed(frames.write_register(register, value, chip))
    assert command == Command(Cmd.WRITE_REGISTER, chip is None, chip or 0, register, value)
    frame = frames.write_register(register, value, chip)
    assert crc5(frame[2:-1]) == frame[-1]


@given(
    job_id=st.integers(0, 15),
    version=st.integers(0, 2**32 - 1),
    prev=st.binary(min_size=32, max_size=32),
    merkle=st.binary(min_size=32, max_size=32),
    ntime=st.integers(0, 2**32 - 1),
    nbits=st.integers(0, 2**32 - 1),
)
def test_job_round_trip(
    job_id: int, version: int, prev: bytes, merkle: bytes, ntime: int, nbits: int
) -> None:
    job = Job(job_id, version, prev, merkle, ntime, nbits)
    assert CommandDecoder().feed(frames.job_frame(job)) == [job]


@given(st.integers(0, 2**32 - 1))
def test_pll_decode_of_any_value_is_a_setting_or_a_protocol_error(value: int) -> None:
    try:
        setting = registers.decode_pll(value)
    except Exception as exc:
        assert type(exc).__name__ == "ProtocolError"
    else:
        assert setting.freq_mhz > 0


# -- more golden frames, worked out by hand with the bitwise CRC definitions ---------------


def crc5_bitwise(data: bytes, bit_count: int) -> int:
    """CRC5 as the notes define it: poly 0x05, init 0x1F, MSB first, over `bit_count` bits."""
    crc = 0x1F
    for index in range(bit_count):
        bit = (data[index // 8] >> (7 - index % 8)) & 1
        top = (crc >> 4) & 1
        crc = (crc << 1) & 0x1F
        if top ^ bit:
            crc ^= 0x05
    return crc


@pytest.mark.parametrize(
    ("golden", "encoded"),
    [
        ("55 AA 42 05 08 14 1B", lambda: frames.read_register(0x14, chip=8)),
        ("55 AA 41 09 08 A8 00 07 01 F0 06", lambda: frames.write_register(0xA8, 0x701F0, chip=8)),
        ("55 AA 40 05 10 00 0F", lambda: frames.set_address(0x10)),
        ("55 AA 51 09 00 08 FF FF FF FF 1F", lambda: frames.write_register(0x08, 0xFFFF_FFFF)),
    ],
)
def test_frames_for_one_chip_and_extreme_values_are_the_documented_bytes(
    golden: str, encoded: Callable[[], bytes]
) -> None:
    assert encoded() == hexbytes(golden)


def test_a_job_frame_is_the_documented_bytes() -> None:
    assert frames.job_frame(sample_job()) == hexbytes(
        "55 AA 21 56 18 01 00 00 00 00 B4 3A 0E 17 5C 8B 67 67"
        " 3C 3D 3E 3F 38 39 3A 3B 34 35 36 37 30 31 32 33"  # merkle root, words reversed
        " 2C 2D 2E 2F 28 29 2A 2B 24 25 26 27 20 21 22 23"
        " 1C 1D 1E 1F 18 19 1A 1B 14 15 16 17 10 11 12 13"  # previous hash, words reversed
        " 0C 0D 0E 0F 08 09 0A 0B 04 05 06 07 00 01 02 03"
        " 00 00 00 20 E3 56"  # version, CRC-16 big-endian
    )


def test_the_simulated_chips_reply_with_the_published_bytes() -> None:
    assert frames.register_reply(0x1370_0000, 0, 0) == hexbytes("AA 55 13 70 00 00 00 00 00 00 10")
    assert frames.register_reply(0x1368_0000, 8, 0) == hexbytes("AA 55 13 68 00 00 08 00 00 00 1F")
    published = hexbytes("AA 55 18 00 A6 40 02 99 22 F9 91")
    assert frames.nonce_reply(0x40A6_0018, 9, 9, 0x22F9, midstate=2) == published


@given(st.binary(max_size=16), st.integers(0, 255), st.integers(0, 8))
def test_crc5_covers_exactly_the_trailing_bits_asked_for(
    data: bytes, trailing: int, bit_count: int
) -> None:
    expected = crc5_bitwise(data + bytes((trailing,)), 8 * len(data) + bit_count)
    assert crc5_bits(data, trailing, bit_count) == expected
    assert crc5(data) == crc5_bitwise(data, 8 * len(data))


# -- encoders refuse what does not fit -------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda: frames.write_register(0x08, 0x1_0000_0000),
        lambda: frames.write_register(0x08, -1),
        lambda: frames.write_register(0x100, 0),
        lambda: frames.write_register(0x08, 0, chip=256),
        lambda: frames.read_register(0x08, chip=-1),
        lambda: frames.set_address(256),
    ],
)
def test_a_value_that_does_not_fit_its_field_is_refused(encode: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode()


def test_fields_at_their_largest_are_accepted() -> None:
    assert frames.set_address(255)[4] == 0xFF
    assert frames.read_register(0xFF, chip=255)[4:6] == b"\xff\xff"
    assert Job(15, 0, bytes(32), bytes(32), 0, 0).job_id == 15


@pytest.mark.parametrize(
    ("job_id", "prev", "merkle", "words"),
    [
        (16, 32, 32, "outside 0..15"),
        (-1, 32, 32, "outside 0..15"),
        (0, 31, 32, "must be 32 bytes"),
        (0, 32, 33, "must be 32 bytes"),
    ],
)
def test_a_job_that_cannot_be_sent_is_refused(
    job_id: int, prev: int, merkle: int, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        Job(job_id, 0, bytes(prev), bytes(merkle), 0, 0)


# -- the decoders' bookkeeping ----------------------------------------------------------------


def test_reply_decoder_counts_what_it_throws_away_and_keeps_a_split_preamble() -> None:
    decoder = ReplyDecoder()
    reply = frames.register_reply(0x1368_0000, 8, 0)
    assert decoder.feed(b"\x01\x02\x03") == []
    assert decoder.feed(b"\xaa") == []  # may start a preamble: kept
    assert (decoder.stats.frames, decoder.stats.crc_errors, decoder.stats.discarded_bytes) == (
        0,
        0,
        3,
    )
    assert decoder.feed(reply[1:]) == [RegisterReply(0x1368_0000, 8, 0)]
    assert (decoder.stats.frames, decoder.stats.crc_errors, decoder.stats.discarded_bytes) == (
        1,
        0,
        3,
    )
    corrupted = bytearray(reply)
    corrupted[6] ^= 0x01
    assert decoder.feed(bytes(corrupted) + b"\x07" + reply) == [RegisterReply(0x1368_0000, 8, 0)]
    # The bad frame costs its preamble, then its 9 other bytes and the stray byte.
    assert (decoder.stats.frames, decoder.stats.crc_errors, decoder.stats.discarded_bytes) == (
        2,
        1,
        3 + 2 + 9 + 1,
    )


def test_reply_decoder_waits_for_the_rest_of_a_frame() -> None:
    decoder = ReplyDecoder()
    reply = frames.nonce_reply(0x1234_5678, 5, 2, 0x00FF)
    for size in range(1, len(reply)):
        fresh = ReplyDecoder()
        assert fresh.feed(reply[:size]) == []
        assert len(fresh.feed(reply[size:])) == 1
        assert fresh.stats.discarded_bytes == 0
    assert decoder.feed(b"\x00" * 4 + reply[:10]) == []
    assert len(decoder.feed(reply[10:])) == 1


def command_stream() -> bytes:
    return (
        frames.chain_inactive()
        + frames.job_frame(sample_job(2))
        + frames.write_register(0x08, 0x50E0_0261, chip=4)
        + frames.job_frame(sample_job(5))
    )


def test_a_chip_decodes_commands_split_anywhere_once_they_are_complete() -> None:
    stream = command_stream()
    whole = CommandDecoder().feed(stream)
    assert len(whole) == 4
    for cut in range(1, len(stream)):
        decoder = CommandDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == whole
        assert (decoder.stats.frames, decoder.stats.jobs, decoder.stats.discarded_bytes) == (
            4,
            2,
            0,
        )


def test_a_chip_counts_bad_headers_at_once_and_garbage_byte_by_byte() -> None:
    decoder = CommandDecoder()
    assert decoder.feed(b"\x00\x11\x55\xaa\x00\x05") == []  # a header no host sends
    stats = decoder.stats
    # Dropped: the two bytes before it, then its header and length (no preamble in them).
    assert (stats.bad_frames, stats.crc_errors, stats.discarded_bytes) == (1, 0, 4)
    assert decoder.feed(b"\x55\xaa\x41\x05") == []  # a write with a read's length
    assert (stats.bad_frames, stats.crc_errors) == (2, 0)
    good = frames.set_address(6)
    assert decoder.feed(b"\x22\x55") == []  # the 0x55 may start a preamble: kept
    assert decoder.feed(good[1:]) == [Command(Cmd.SET_ADDRESS, False, 6, 0, None)]
    # 0x00 0x11, the first bad frame's 0x00 0x05 and the second's 0x41 0x05, then 0x22.
    assert (stats.frames, stats.jobs, stats.discarded_bytes) == (1, 0, 2 + 2 + 2 + 1)


def test_a_chip_waits_for_a_header_that_has_not_arrived() -> None:
    decoder = CommandDecoder()
    assert decoder.feed(b"\x00\x00\x55\xaa\x40") == []
    assert decoder.stats.bad_frames == 0
    assert decoder.feed(frames.set_address(3)[3:]) == [Command(Cmd.SET_ADDRESS, False, 3, 0, None)]


def test_a_chip_counts_a_bad_crc_and_reads_on_right_after_the_preamble() -> None:
    decoder = CommandDecoder()
    bad = bytearray(frames.set_address(2))
    bad[-1] ^= 0x01
    good = frames.set_address(6)
    assert decoder.feed(bytes(bad) + good) == [Command(Cmd.SET_ADDRESS, False, 6, 0, None)]
    stats = decoder.stats
    assert (stats.frames, stats.crc_errors, stats.bad_frames, stats.discarded_bytes) == (1, 1, 0, 5)
