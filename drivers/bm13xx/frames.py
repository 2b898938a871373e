"""BM13xx UART frames as pure functions over bytes: encoders for both directions and
streaming decoders that resynchronise after garbage, dropped bytes and bad CRCs.

Host → chips: `55 AA`, header (type | all-chips | command), length (everything after the
preamble), data, CRC5 — or, for jobs, CRC-16/CCITT-FALSE big-endian. Chips → host: 11
bytes, `AA 55`, four value/nonce bytes, four id bytes, and a last byte whose bit 7 marks a
nonce and whose low five bits are CRC5 over everything after the preamble including the
three flag bits. No I/O here, so the same code is fuzzed, benchmarked, used by the
driver and (from the other side) by the simulator.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from hashbay.drivers.bm13xx.crc import CRC5_INIT, CRC5_TABLE, crc5, crc5_bits, crc16
from hashbay.drivers.errors import ProtocolError

COMMAND_PREAMBLE = b"\x55\xaa"
RESPONSE_PREAMBLE = b"\xaa\x55"
RESPONSE_LEN = 11
TYPE_JOB = 0x20
TYPE_COMMAND = 0x40
ALL_CHIPS = 0x10
NONCE_FLAG = 0x80
JOB_DATA_LEN = 82
JOB_FRAME_LEN = 2 + 2 + JOB_DATA_LEN + 2
_CRC5_START = CRC5_INIT << 3


class Cmd(IntEnum):
    SET_ADDRESS = 0
    WRITE_REGISTER = 1
    READ_REGISTER = 2
    CHAIN_INACTIVE = 3


# -- host → chips -----------------------------------------------------------------------


def _command(header: int, data: bytes) -> bytes:
    body = bytes((header, len(data) + 3)) + data
    return COMMAND_PREAMBLE + body + bytes((crc5(body),))


def set_address(address: int) -> bytes:
    """Give the first chip that has no address yet this one (after chain_inactive)."""
    return _command(TYPE_COMMAND | Cmd.SET_ADDRESS, bytes((_u8(address, "address"), 0)))


def chain_inactive() -> bytes:
    """Make every chip forget its address and forward what it does not claim."""
    return _command(TYPE_COMMAND | ALL_CHIPS | Cmd.CHAIN_INACTIVE, b"\x00\x00")


def read_register(register: int, chip: int | None = None) -> bytes:
    """Read a register from one chip, or from all chips (each answers) when chip is None."""
    group = ALL_CHIPS if chip is None else 0
    data = bytes((_u8(chip or 0, "chip"), _u8(register, "register")))
    return _command(TYPE_COMMAND | group | Cmd.READ_REGISTER, data)


def write_register(register: int, value: int, chip: int | None = None) -> bytes:
    """Write a 32-bit register value (sent big-endian) to one chip or all of them."""
    if not 0 <= value <= 0xFFFF_FFFF:
        raise ValueError(f"register value {value:#x} does not fit 32 bits")
    group = ALL_CHIPS if chip is None else 0
    data = bytes((_u8(chip or 0, "chip"), _u8(register, "register"))) + value.to_bytes(4, "big")
    return _command(TYPE_COMMAND | group | Cmd.WRITE_REGISTER, data)


def _u8(value: int, what: str) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} {value} does not fit one byte")
    return value


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of work for a chain, in Bitcoin's own byte orders.

    prev_hash and merkle_root are in internal (header) order; on the wire each is sent as
    its eight 32-bit words in reverse order. The chips roll the version within the mask
    programmed in register 0xA4 and search the nonce space.
    """

    job_id: int  # 0..15, sent as job_id << 3
    version: int
    prev_hash: bytes
    merkle_root: bytes
    ntime: int
    nbits: int

    def __post_init__(self) -> None:
        if not 0 <= self.job_id <= 15:
            raise ValueError(f"job id {self.job_id} outside 0..15")
        if len(self.prev_hash) != 32 or len(self.merkle_root) != 32:
            raise ValueError("prev_hash and merkle_root must be 32 bytes")


def _swap_words(digest: bytes) -> bytes:
    return b"".join(digest[i : i + 4] for i in range(28, -4, -4))


def job_frame(job: Job) -> bytes:
    data = (
        bytes((job.job_id << 3, 1))
        + b"\x00\x00\x00\x00"
        + struct.pack("<II", job.nbits, job.ntime)
        + _swap_words(job.merkle_root)
        + _swap_words(job.prev_hash)
        + struct.pack("<I", job.version)
    )
    body = bytes((TYPE_JOB | Cmd.WRITE_REGISTER, JOB_FRAME_LEN - 2)) + data
    return COMMAND_PREAMBLE + body + crc16(body).to_bytes(2, "big")


# -- chips → host -----------------------------------------------------------------------


class RegisterReply(NamedTuple):
    value: int
    chip: int
    register: int


class NonceReply(NamedTuple):
    nonce: int  # little-endian value, as it stands in the block header and in shares
    chip: int  # chip address (nonce bits 24..17 of the wire bytes read big-endian)
    core: int  # big core (bits 31..25)
    small_core: int
    job_id: int
    version_bits: int  # rolled version = job version | version_bits << 13
    midstate: int


Reply = RegisterReply | NonceReply


def register_reply(value: int, chip: int, register: int) -> bytes:
    body = value.to_bytes(4, "big") + bytes((chip, register, 0, 0))
    return RESPONSE_PREAMBLE + body + bytes((_response_crc(body, 0),))


def nonce_reply(
    nonce: int, job_id: int, small_core: int, version_bits: int, midstate: int = 0
) -> bytes:
    """What a chip sends for a found nonce (nonce given as its little-endian value)."""
    body = (
        nonce.to_bytes(4, "little")
        + bytes((midstate, (job_id << 4) | small_core))
        + version_bits.to_bytes(2, "big")
    )
    return RESPONSE_PREAMBLE + body + bytes((NONCE_FLAG | _response_crc(body, NONCE_FLAG),))


def _response_crc(body: bytes, flags: int) -> int:
    return crc5_bits(body, flags, 3)


_REGISTER = struct.Struct(">2xIBB")
_NONCE = struct.Struct(">2xIBBH")
_NONCE_LE = struct.Struct("<2xI")


@dataclass
class DecoderStats:
    frames: int = 0
    crc_errors: int = 0
    discarded_bytes: int = 0


class ReplyDecoder:
    """Host side: turns a byte stream from a chain into replies, skipping what is broken.

    A bad CRC costs only the two preamble bytes: the search restarts right after them, so
    a real frame hiding behind garbage or a truncated frame is still found.
    """

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> list[Reply]:
        buf = self._buffer
        buf += data
        replies: list[Reply] = []
        append = replies.append
        stats = self.stats
        table = CRC5_TABLE
        end = len(buf)
        pos = 0
        while True:
            start = buf.find(RESPONSE_PREAMBLE, pos)
            if start < 0:
                keep = 1 if end and buf[end - 1] == 0xAA else 0
                stats.discarded_bytes += end - pos - keep
                pos = end - keep
                break
            stats.discarded_bytes += start - pos
            if end - start < RESPONSE_LEN:
                pos = start
                break
            reg = _CRC5_START
            for byte in buf[start + 2 : start + RESPONSE_LEN]:  # inlined crc5: the hot path
                reg = table[reg ^ byte]
            if reg:
                stats.crc_errors += 1
                stats.discarded_bytes += 2
                pos = start + 2
                continue
            if buf[start + 10] & NONCE_FLAG:
                wire, midstate, result, version_bits = _NONCE.unpack_from(buf, start)
                (nonce,) = _NONCE_LE.unpack_from(buf, start)
                append(
                    NonceReply(
                        nonce,
                        (wire >> 17) & 0xFF,
                        wire >> 25,
                        result & 0x0F,
                        result >> 4,
                        version_bits,
                        midstate,
                    )
                )
            else:
                append(RegisterReply(*_REGISTER.unpack_from(buf, start)))
            stats.frames += 1
            pos = start + RESPONSE_LEN
        del buf[:pos]
        return replies


# -- what a chip hears ------------------------------------------------------------------


class Command(NamedTuple):
    cmd: Cmd
    broadcast: bool
    chip: int
    register: int
    value: int | None  # only for WRITE_REGISTER


@dataclass
class CommandDecoderStats:
    frames: int = 0
    jobs: int = 0
    crc_errors: int = 0
    bad_frames: int = 0
    discarded_bytes: int = 0


class CommandDecoder:
    """Chip side: commands and jobs out of the host's byte stream; bad CRC → ignored."""

    def __init__(self) -> None:
        self.stats = CommandDecoderStats()
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> list[Command | Job]:
        buf = self._buffer
        buf += data
        out: list[Command | Job] = []
        pos = 0
        while True:
            start = buf.find(COMMAND_PREAMBLE, pos)
            if start < 0:
                keep = 1 if buf and buf[-1] == 0x55 else 0
                self.stats.discarded_bytes += len(buf) - pos - keep
                pos = len(buf) - keep
                break
            self.stats.discarded_bytes += start - pos
            if len(buf) - start < 4:
                pos = start
                break
            header, length = buf[start + 2], buf[start + 3]
            expected = _expected_length(header)
            if expected is None or length != expected:
                self.stats.bad_frames += 1
                pos = start + 2
                continue
            if len(buf) - start < 2 + length:
                pos = start
                break
            frame = bytes(buf[start : start + 2 + length])
            try:
                out.append(_decode_command(frame))
            except ProtocolError:
                self.stats.crc_errors += 1
                pos = start + 2
                continue
            self.stats.frames += 1
            pos = start + 2 + length
        del buf[:pos]
        self.stats.jobs += sum(isinstance(item, Job) for item in out)
        return out


def _expected_length(header: int) -> int | None:
    if header == TYPE_JOB | Cmd.WRITE_REGISTER:
        return JOB_FRAME_LEN - 2
    if header & ~(ALL_CHIPS | 0x03) != TYPE_COMMAND:
        return None
    return 9 if header & 0x03 == Cmd.WRITE_REGISTER else 5


def _decode_command(frame: bytes) -> Command | Job:
    body = frame[2:]
    header = body[0]
    if header & TYPE_COMMAND:
        if crc5(body[:-1]) != body[-1]:
            raise ProtocolError("command CRC5 mismatch")
        cmd = Cmd(header & 0x03)
        value = int.from_bytes(body[4:8], "big") if cmd is Cmd.WRITE_REGISTER else None
        return Command(cmd, bool(header & ALL_CHIPS), body[2], body[3], value)
    if crc16(body[:-2]) != int.from_bytes(body[-2:], "big"):
        raise ProtocolError("job CRC16 mismatch")
    data = body[2:-2]
    nbits, ntime = struct.unpack_from("<II", data, 6)
    return Job(  # a 4-bit id and two 32-byte hashes: nothing here can be out of range
        job_id=(data[0] >> 3) & 0x0F,
        version=struct.unpack_from("<I", data, 78)[0],
        prev_hash=_swap_words(data[46:78]),
        merkle_root=_swap_words(data[14:46]),
        ntime=ntime,
        nbits=nbits,
    )
