"""The Stratum V2 messages hashbay speaks (common and mining protocol), as pure functions.

`decode(frame)` turns a frame's payload into a typed message whose every field has been
read within bounds, or raises Sv2ProtocolError saying what was wrong; anything a pool
sends is untrusted. Field types follow the specification's table (section 3.1):
little-endian integers, U256 as 32 raw bytes, STR0_255 / B0_32 / B0_255 / B0_64K with
their length prefixes, SEQ0_255, OPTION. Bytes after the known fields are ignored: that
is where negotiated extensions put their TLV fields. Job negotiation (custom jobs),
standard channels and group channels are out of scope; their messages decode to
`Unsupported`, which the session ignores.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import ClassVar

from hashbay.agent.core.quoting import clip
from hashbay.agent.mining.sv2.framing import CHANNEL_BIT, Frame
from hashbay.drivers.errors import ProtocolError

MINING_PROTOCOL = 0
PROTOCOL_VERSION = 2
MAX_TEXT_CHARS = 120  # pool-supplied text kept for logs and status

# SetupConnection.flags for the mining protocol (bit 0 = least significant)
REQUIRES_STANDARD_JOBS = 1 << 0
REQUIRES_WORK_SELECTION = 1 << 1
REQUIRES_VERSION_ROLLING = 1 << 2
# SetupConnection.Success.flags
REQUIRES_FIXED_VERSION = 1 << 0
REQUIRES_EXTENDED_CHANNELS = 1 << 1

_F32 = struct.Struct("<f")


class Sv2ProtocolError(ProtocolError):
    """The pool sent something that is not valid Stratum V2."""


# -- reading and writing the field types ------------------------------------------------


class Reader:
    """Reads fields off a payload; running short is a protocol error, never an IndexError."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._at = 0
        self._what = what

    def take(self, count: int, field: str) -> bytes:
        end = self._at + count
        if end > len(self._data):
            raise Sv2ProtocolError(f"{self._what}: payload ends inside {field}")
        chunk = self._data[self._at : end]
        self._at = end
        return chunk

    @property
    def remaining(self) -> int:
        return len(self._data) - self._at

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "little")

    def u8(self, field: str) -> int:
        return self.uint(1, field)

    def u16(self, field: str) -> int:
        return self.uint(2, field)

    def u32(self, field: str) -> int:
        return self.uint(4, field)

    def u64(self, field: str) -> int:
        return self.uint(8, field)

    def boolean(self, field: str) -> bool:
        return bool(self.u8(field) & 1)  # only the lowest bit counts

    def f32(self, field: str) -> float:
        value: float = _F32.unpack(self.take(4, field))[0]
        return value

    def u256(self, field: str) -> bytes:
        return self.take(32, field)

    def sized(self, prefix: int, limit: int, field: str) -> bytes:
        length = self.uint(prefix, field)
        if length > limit:
            raise Sv2ProtocolError(f"{self._what}: {field} of {length} bytes, limit {limit}")
        return self.take(length, field)

    def b0_32(self, field: str) -> bytes:
        return self.sized(1, 32, field)

    def b0_64k(self, field: str) -> bytes:
        return self.sized(2, 65535, field)

    def text(self, field: str) -> str:
        """STR0_255, as printable text (pools are told to send ASCII; we do not trust it)."""
        raw = self.sized(1, 255, field)
        return clip(raw.decode("utf-8", errors="replace"), MAX_TEXT_CHARS)

    def option_u32(self, field: str) -> int | None:
        count = self.u8(field)
        if count > 1:
            raise Sv2ProtocolError(f"{self._what}: {field} holds {count} values, at most 1")
        return self.u32(field) if count else None

    def seq_u256(self, field: str) -> tuple[bytes, ...]:
        count = self.u8(field)
        return tuple(self.u256(field) for _ in range(count))


def _u(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def _sized(data: bytes, prefix: int, limit: int) -> bytes:
    if len(data) > limit:
        raise ValueError(f"{len(data)} bytes, limit {limit}")
    return _u(len(data), prefix) + data


def _text(text: str) -> bytes:
    return _sized(text.encode()[:255], 1, 255)


def _f32(value: float) -> bytes:
    return _F32.pack(value if math.isfinite(value) else 0.0)


def target_bytes(target: int) -> bytes:
    return _u(target, 32)


def target_of(data: bytes) -> int:
    return int.from_bytes(data, "little")


# -- the messages ------------------------------------------------------------------------


class Message:
    TYPE: ClassVar[int]
    CHANNEL: ClassVar[bool] = False

    def payload(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def read(cls, r: Reader) -> Message:
        raise NotImplementedError

    def frame(self) -> Frame:
        return Frame(CHANNEL_BIT if self.CHANNEL else 0, self.TYPE, self.payload())


@dataclass(frozen=True, slots=True)
class SetupConnection(Message):
    TYPE = 0x00
    flags: int
    endpoint_host: str
    endpoint_port: int
    vendor: str
    hardware_version: str = ""
    firmware: str = ""
    device_id: str = ""
    protocol: int = MINING_PROTOCOL
    min_version: int = PROTOCOL_VERSION
    max_version: int = PROTOCOL_VERSION

    def payload(self) -> bytes:
        return (
            _u(self.protocol, 1)
            + _u(self.min_version, 2)
            + _u(self.max_version, 2)
            + _u(self.flags, 4)
            + _text(self.endpoint_host)
            + _u(self.endpoint_port, 2)
            + _text(self.vendor)
            + _text(self.hardware_version)
            + _text(self.firmware)
            + _text(self.device_id)
        )

    @classmethod
    def read(cls, r: Reader) -> SetupConnection:
        protocol, low, high, flags = r.u8("protocol"), r.u16("min"), r.u16("max"), r.u32("flags")
        host, port = r.text("endpoint_host"), r.u16("endpoint_port")
        vendor, hardware, firmware = r.text("vendor"), r.text("hardware"), r.text("firmware")
        return cls(flags, host, port, vendor, hardware, firmware, r.text("device_id"),
                   protocol, low, high)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SetupConnectionSuccess(Message):
    TYPE = 0x01
    used_version: int
    flags: int

    def payload(self) -> bytes:
        return _u(self.used_version, 2) + _u(self.flags, 4)

    @classmethod
    def read(cls, r: Reader) -> SetupConnectionSuccess:
        return cls(r.u16("used_version"), r.u32("flags"))


@dataclass(frozen=True, slots=True)
class SetupConnectionError(Message):
    TYPE = 0x02
    flags: int
    error_code: str

    def payload(self) -> bytes:
        return _u(self.flags, 4) + _text(self.error_code)

    @classmethod
    def read(cls, r: Reader) -> SetupConnectionError:
        return cls(r.u32("flags"), r.text("error_code"))


@dataclass(frozen=True, slots=True)
class Reconnect(Message):
    TYPE = 0x04
    new_host: str  # empty: the same host
    new_port: int  # 0: the same port

    def payload(self) -> bytes:
        return _text(self.new_host) + _u(self.new_port, 2)

    @classmethod
    def read(cls, r: Reader) -> Reconnect:
        return cls(r.text("new_host"), r.u16("new_port"))


@dataclass(frozen=True, slots=True)
class OpenExtendedMiningChannel(Message):
    TYPE = 0x13
    request_id: int
    user_identity: str
    nominal_hash_rate: float
    max_target: int
    min_extranonce_size: int

    def payload(self) -> bytes:
        return (
            _u(self.request_id, 4)
            + _text(self.user_identity)
            + _f32(self.nominal_hash_rate)
            + target_bytes(self.max_target)
            + _u(self.min_extranonce_size, 2)
        )

    @classmethod
    def read(cls, r: Reader) -> OpenExtendedMiningChannel:
        request_id, user = r.u32("request_id"), r.text("user_identity")
        rate, target = r.f32("nominal_hash_rate"), target_of(r.u256("max_target"))
        return cls(request_id, user, rate, target, r.u16("min_extranonce_size"))


@dataclass(frozen=True, slots=True)
class OpenExtendedMiningChannelSuccess(Message):
    TYPE = 0x14
    request_id: int
    channel_id: int
    target: int
    extranonce_size: int
    extranonce_prefix: bytes
    group_channel_id: int = 0

    def payload(self) -> bytes:
        return (
            _u(self.request_id, 4)
            + _u(self.channel_id, 4)
            + target_bytes(self.target)
            + _u(self.extranonce_size, 2)
            + _sized(self.extranonce_prefix, 1, 32)
            + _u(self.group_channel_id, 4)
        )

    @classmethod
    def read(cls, r: Reader) -> OpenExtendedMiningChannelSuccess:
        request_id, channel_id = r.u32("request_id"), r.u32("channel_id")
        target, size = target_of(r.u256("target")), r.u16("extranonce_size")
        prefix = r.b0_32("extranonce_prefix")
        group = r.u32("group_channel_id") if r.remaining >= 4 else 0  # older pools omit it
        return cls(request_id, channel_id, target, size, prefix, group)


@dataclass(frozen=True, slots=True)
class OpenMiningChannelError(Message):
    TYPE = 0x12
    request_id: int
    error_code: str

    def payload(self) -> bytes:
        return _u(self.request_id, 4) + _text(self.error_code)

    @classmethod
    def read(cls, r: Reader) -> OpenMiningChannelError:
        return cls(r.u32("request_id"), r.text("error_code"))


@dataclass(frozen=True, slots=True)
class UpdateChannel(Message):
    TYPE = 0x16
    CHANNEL = True
    channel_id: int
    nominal_hash_rate: float
    maximum_target: int

    def payload(self) -> bytes:
        return (
            _u(self.channel_id, 4)
            + _f32(self.nominal_hash_rate)
            + target_bytes(self.maximum_target)
        )

    @classmethod
    def read(cls, r: Reader) -> UpdateChannel:
        channel_id, rate = r.u32("channel_id"), r.f32("nominal_hash_rate")
        return cls(channel_id, rate, target_of(r.u256("maximum_target")))


@dataclass(frozen=True, slots=True)
class UpdateChannelError(Message):
    TYPE = 0x17
    CHANNEL = True
    channel_id: int
    error_code: str

    def payload(self) -> bytes:
        return _u(self.channel_id, 4) + _text(self.error_code)

    @classmethod
    def read(cls, r: Reader) -> UpdateChannelError:
        return cls(r.u32("channel_id"), r.text("error_code"))


@dataclass(frozen=True, slots=True)
class CloseChannel(Message):
    TYPE = 0x18
    CHANNEL = True
    channel_id: int
    reason_code: str

    def payload(self) -> bytes:
        return _u(self.channel_id, 4) + _text(self.reason_code)

    @classmethod
    def read(cls, r: Reader) -> CloseChannel:
        return cls(r.u32("channel_id"), r.text("reason_code"))


@dataclass(frozen=True, slots=True)
class SetExtranoncePrefix(Message):
    TYPE = 0x19
    CHANNEL = True
    channel_id: int
    extranonce_prefix: bytes

    def payload(self) -> bytes:
        return _u(self.channel_id, 4) + _sized(self.extranonce_prefix, 1, 32)

    @classmethod
    def read(cls, r: Reader) -> SetExtranoncePrefix:
        return cls(r.u32("channel_id"), r.b0_32("extranonce_prefix"))


@dataclass(frozen=True, slots=True)
class SubmitSharesExtended(Message):
    TYPE = 0x1B
    CHANNEL = True
    channel_id: int
    sequence_number: int
    job_id: int
    nonce: int
    ntime: int
    version: int
    extranonce: bytes

    def payload(self) -> bytes:
        return (
            _u(self.channel_id, 4)
            + _u(self.sequence_number, 4)
            + _u(self.job_id, 4)
            + _u(self.nonce, 4)
            + _u(self.ntime, 4)
            + _u(self.version, 4)
            + _sized(self.extranonce, 1, 32)
        )

    @classmethod
    def read(cls, r: Reader) -> SubmitSharesExtended:
        channel_id, sequence, job_id = r.u32("channel_id"), r.u32("sequence"), r.u32("job_id")
        nonce, ntime, version = r.u32("nonce"), r.u32("ntime"), r.u32("version")
        return cls(channel_id, sequence, job_id, nonce, ntime, version, r.b0_32("extranonce"))


@dataclass(frozen=True, slots=True)
class SubmitSharesSuccess(Message):
    TYPE = 0x1C
    CHANNEL = True
    channel_id: int
    last_sequence_number: int
    new_submits_accepted_count: int
    new_shares_sum: int

    def payload(self) -> bytes:
        return (
            _u(self.channel_id, 4)
            + _u(self.last_sequence_number, 4)
            + _u(self.new_submits_accepted_count, 4)
            + _u(self.new_shares_sum, 8)
        )

    @classmethod
    def read(cls, r: Reader) -> SubmitSharesSuccess:
        channel_id, last, count = r.u32("channel_id"), r.u32("last_sequence"), r.u32("count")
        return cls(channel_id, last, count, r.u64("new_shares_sum"))


@dataclass(frozen=True, slots=True)
class SubmitSharesError(Message):
    TYPE = 0x1D
    CHANNEL = True
    channel_id: int
    sequence_number: int
    error_code: str

    def payload(self) -> bytes:
        return _u(self.channel_id, 4) + _u(self.sequence_number, 4) + _text(self.error_code)

    @classmethod
    def read(cls, r: Reader) -> SubmitSharesError:
        return cls(r.u32("channel_id"), r.u32("sequence_number"), r.text("error_code"))


@dataclass(frozen=True, slots=True)
class NewExtendedMiningJob(Message):
    TYPE = 0x1F
    CHANNEL = True
    channel_id: int
    job_id: int
    min_ntime: int | None  # None: a future job, activated by SetNewPrevHash
    version: int
    version_rolling_allowed: bool
    merkle_path: tuple[bytes, ...]
    coinbase_tx_prefix: bytes
    coinbase_tx_suffix: bytes

    def payload(self) -> bytes:
        ntime = b"\0" if self.min_ntime is None else b"\x01" + _u(self.min_ntime, 4)
        return (
            _u(self.channel_id, 4)
            + _u(self.job_id, 4)
            + ntime
            + _u(self.version, 4)
            + bytes((int(self.version_rolling_allowed),))
            + _u(len(self.merkle_path), 1)
            + b"".join(self.merkle_path)
            + _sized(self.coinbase_tx_prefix, 2, 65535)
            + _sized(self.coinbase_tx_suffix, 2, 65535)
        )

    @classmethod
    def read(cls, r: Reader) -> NewExtendedMiningJob:
        channel_id, job_id = r.u32("channel_id"), r.u32("job_id")
        min_ntime, version = r.option_u32("min_ntime"), r.u32("version")
        rolling, path = r.boolean("version_rolling_allowed"), r.seq_u256("merkle_path")
        prefix, suffix = r.b0_64k("coinbase_tx_prefix"), r.b0_64k("coinbase_tx_suffix")
        return cls(channel_id, job_id, min_ntime, version, rolling, path, prefix, suffix)


@dataclass(frozen=True, slots=True)
class SetNewPrevHash(Message):
    TYPE = 0x20
    CHANNEL = True
    channel_id: int
    job_id: int
    prev_hash: bytes  # header byte order
    min_ntime: int
    nbits: int

    def payload(self) -> bytes:
        return (
            _u(self.channel_id, 4)
            + _u(self.job_id, 4)
            + self.prev_hash
            + _u(self.min_ntime, 4)
            + _u(self.nbits, 4)
        )

    @classmethod
    def read(cls, r: Reader) -> SetNewPrevHash:
        channel_id, job_id, prev = r.u32("channel_id"), r.u32("job_id"), r.u256("prev_hash")
        return cls(channel_id, job_id, prev, r.u32("min_ntime"), r.u32("nbits"))


@dataclass(frozen=True, slots=True)
class SetTarget(Message):
    TYPE = 0x21
    CHANNEL = True
    channel_id: int
    maximum_target: int

    def payload(self) -> bytes:
        return _u(self.channel_id, 4) + target_bytes(self.maximum_target)

    @classmethod
    def read(cls, r: Reader) -> SetTarget:
        return cls(r.u32("channel_id"), target_of(r.u256("maximum_target")))


@dataclass(frozen=True, slots=True)
class Unsupported(Message):
    """A message we do not act on (another extension, group channels, custom jobs)."""

    TYPE = -1
    extension_type: int
    message_type: int

    def payload(self) -> bytes:  # pragma: no cover - never sent
        return b""


_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        SetupConnection,
        SetupConnectionSuccess,
        SetupConnectionError,
        Reconnect,
        OpenExtendedMiningChannel,
        OpenExtendedMiningChannelSuccess,
        OpenMiningChannelError,
        UpdateChannel,
        UpdateChannelError,
        CloseChannel,
        SetExtranoncePrefix,
        SubmitSharesExtended,
        SubmitSharesSuccess,
        SubmitSharesError,
        NewExtendedMiningJob,
        SetNewPrevHash,
        SetTarget,
    )
}


def decode(frame: Frame) -> Message:
    """The message a frame carries, every field checked, or Sv2ProtocolError."""
    cls = _TYPES.get(frame.message_type) if frame.extension == 0 else None
    if cls is None:
        return Unsupported(frame.extension_type, frame.message_type)
    return cls.read(Reader(frame.payload, cls.__name__))
