"""Stratum V2 frames: the 6-byte header and the encrypted layout on the wire.

Header: extension type (u16, bit 15 = channel message), message type (u8), payload
length (u24), little-endian. Encrypted (SV2 specification 4.6): the header alone as one
AEAD message (6 + 16 MAC = 22 bytes), then the payload in chunks of at most 65,519
plaintext bytes, each sealed with its own MAC (at most 65,535 bytes on the wire). The
header's length is the plaintext's, so the reader knows how much ciphertext follows
and refuses an oversize frame before reading any of it.

`FrameDecoder` is a pure state machine (bytes in, frames out) so the client, the test
pool and the fuzz tests share one reading path; its errors are ProtocolErrors.
"""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.mining.sv2.noise import MAC_BYTES, CipherState, NoiseError
from hashbay.drivers.errors import ProtocolError

HEADER_BYTES = 6
CHANNEL_BIT = 0x8000
MAX_CHUNK_CIPHERTEXT = 65535
MAX_CHUNK_PLAINTEXT = MAX_CHUNK_CIPHERTEXT - MAC_BYTES
ENCRYPTED_HEADER_BYTES = HEADER_BYTES + MAC_BYTES
MAX_LENGTH = (1 << 24) - 1


class FramingError(ProtocolError):
    """A frame that cannot be right: over the size limit, or a short header."""


@dataclass(frozen=True, slots=True)
class Frame:
    extension_type: int  # with the channel bit
    message_type: int
    payload: bytes

    @property
    def channel_message(self) -> bool:
        return bool(self.extension_type & CHANNEL_BIT)

    @property
    def extension(self) -> int:
        """The extension the message belongs to (0: the core protocol)."""
        return self.extension_type & ~CHANNEL_BIT


def encode_header(extension_type: int, message_type: int, length: int) -> bytes:
    if not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"a frame payload is at most {MAX_LENGTH} bytes")
    return (
        extension_type.to_bytes(2, "little") + bytes((message_type,)) + length.to_bytes(3, "little")
    )


def decode_header(data: bytes) -> tuple[int, int, int]:
    """(extension type, message type, payload length) of a plaintext header."""
    if len(data) != HEADER_BYTES:
        raise FramingError(f"a frame header is {HEADER_BYTES} bytes, got {len(data)}")
    return int.from_bytes(data[:2], "little"), data[2], int.from_bytes(data[3:], "little")


def encode_plain(frame: Frame) -> bytes:
    header = encode_header(frame.extension_type, frame.message_type, len(frame.payload))
    return header + frame.payload


def ciphertext_length(plaintext_length: int) -> int:
    """Bytes on the wire for a payload of this many plaintext bytes (MACs included)."""
    chunks, rest = divmod(plaintext_length, MAX_CHUNK_PLAINTEXT)
    return chunks * MAX_CHUNK_CIPHERTEXT + (rest + MAC_BYTES if rest else 0)


def encrypt_frame(cipher: CipherState, frame: Frame) -> bytes:
    payload = frame.payload
    parts = [
        cipher.encrypt(b"", encode_header(frame.extension_type, frame.message_type, len(payload)))
    ]
    for start in range(0, len(payload), MAX_CHUNK_PLAINTEXT):
        parts.append(cipher.encrypt(b"", payload[start : start + MAX_CHUNK_PLAINTEXT]))
    return b"".join(parts)


class FrameDecoder:
    """Encrypted bytes in, frames out. After an error the stream is unusable: drop it."""

    def __init__(self, cipher: CipherState, *, max_payload: int) -> None:
        self._cipher = cipher
        self._max_payload = max_payload
        self._buffer = bytearray()
        self._header: tuple[int, int, int] | None = None
        self.bytes_in = 0

    def feed(self, data: bytes) -> list[Frame]:
        """Every frame the bytes so far complete; NoiseError or FramingError if bad."""
        self.bytes_in += len(data)
        self._buffer += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)

    def _next(self) -> Frame | None:
        buffer = self._buffer
        if self._header is None:
            if len(buffer) < ENCRYPTED_HEADER_BYTES:
                return None
            header = self._cipher.decrypt(b"", bytes(buffer[:ENCRYPTED_HEADER_BYTES]))
            del buffer[:ENCRYPTED_HEADER_BYTES]
            extension_type, message_type, length = decode_header(header)
            if length > self._max_payload:
                raise FramingError(
                    f"frame of {length} bytes is over the {self._max_payload}-byte limit"
                )
            self._header = (extension_type, message_type, length)
        extension_type, message_type, length = self._header
        needed = ciphertext_length(length)
        if len(buffer) < needed:
            return None
        payload = bytearray()
        offset = 0
        while offset < needed:
            chunk = min(MAX_CHUNK_CIPHERTEXT, needed - offset)
            payload += self._cipher.decrypt(b"", bytes(buffer[offset : offset + chunk]))
            offset += chunk
        del buffer[:needed]
        self._header = None
        if len(payload) != length:  # pragma: no cover - the MACs make this impossible
            raise NoiseError("frame payload length does not match its header")
        return Frame(extension_type, message_type, bytes(payload))
