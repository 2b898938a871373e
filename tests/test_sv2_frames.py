"""Stratum V2 frames and messages: layout, chunking, every message round trip, and hostile
input (any bytes, any split) giving only a ProtocolError, never another exception."""

from __future__ import annotations

import contextlib
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.agent.mining.sv2 import messages as m
from hashbay.agent.mining.sv2.framing import (
    CHANNEL_BIT,
    ENCRYPTED_HEADER_BYTES,
    MAX_CHUNK_CIPHERTEXT,
    Frame,
    FrameDecoder,
    FramingError,
    ciphertext_length,
    decode_header,
    encode_header,
    encode_plain,
    encrypt_frame,
)
from hashbay.agent.mining.sv2.noise import CipherState, NoiseError
from hashbay.drivers.errors import ProtocolError

KEY = bytes(range(32))


def pair() -> tuple[CipherState, CipherState]:
    return CipherState(KEY), CipherState(KEY)


def test_the_header_is_extension_type_message_type_and_a_24_bit_length() -> None:
    assert encode_header(CHANNEL_BIT, 0x1F, 0x030201) == b"\x00\x80\x1f\x01\x02\x03"
    assert decode_header(b"\x00\x80\x1f\x01\x02\x03") == (0x8000, 0x1F, 0x030201)
    with pytest.raises(FramingError):
        decode_header(b"\x00" * 5)
    with pytest.raises(ValueError, match="at most"):
        encode_header(0, 0, 1 << 24)


def test_channel_messages_carry_bit_15_of_the_extension_type() -> None:
    frame = m.SetTarget(7, 1).frame()
    assert frame.channel_message and frame.extension == 0
    assert encode_plain(frame)[:2] == b"\x00\x80"
    assert not m.SetupConnectionSuccess(2, 0).frame().channel_message


@pytest.mark.parametrize(
    ("plaintext", "ciphertext"),
    [(0, 0), (1, 17), (65519, 65535), (65520, 65535 + 17), (2 * 65519, 2 * 65535)],
)
def test_the_ciphertext_length_adds_a_mac_per_chunk(plaintext: int, ciphertext: int) -> None:
    assert ciphertext_length(plaintext) == ciphertext


def test_a_large_payload_goes_in_chunks_each_with_its_own_mac() -> None:
    send, receive = pair()
    payload = bytes(range(256)) * 600  # 153,600 bytes: three chunks
    wire = encrypt_frame(send, Frame(CHANNEL_BIT, 0x1F, payload))
    assert len(wire) == ENCRYPTED_HEADER_BYTES + ciphertext_length(len(payload))
    assert send.nonce == 4  # header + three chunks
    decoder = FrameDecoder(receive, max_payload=1 << 20)
    assert decoder.feed(wire) == [Frame(CHANNEL_BIT, 0x1F, payload)]
    assert decoder.pending == 0


def test_a_chunk_moved_or_altered_fails_authentication() -> None:
    send, receive = pair()
    wire = bytearray(encrypt_frame(send, Frame(0, 1, bytes(70_000))))
    wire[ENCRYPTED_HEADER_BYTES + MAX_CHUNK_CIPHERTEXT + 3] ^= 1
    with pytest.raises(NoiseError):
        FrameDecoder(receive, max_payload=1 << 20).feed(bytes(wire))


def test_an_oversize_frame_is_refused_from_its_header_alone() -> None:
    send, receive = pair()
    header = send.encrypt(b"", encode_header(0, 0x1F, 300_000))
    with pytest.raises(FramingError, match="over the 1000-byte limit"):
        FrameDecoder(receive, max_payload=1000).feed(header)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    st.lists(st.integers(1, 400), max_size=20),
)
def test_frames_survive_any_split_of_the_byte_stream(
    payloads: list[bytes], cuts: list[int]
) -> None:
    send, receive = pair()
    frames = [Frame(CHANNEL_BIT, i, p) for i, p in enumerate(payloads)]
    wire = b"".join(encrypt_frame(send, f) for f in frames)
    decoder = FrameDecoder(receive, max_payload=1 << 16)
    got: list[Frame] = []
    at = 0
    for cut in cuts:
        got += decoder.feed(wire[at : at + cut])
        at += cut
    got += decoder.feed(wire[at:])
    assert got == frames


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_on_the_stream_give_frames_or_a_protocol_error(data: bytes) -> None:
    decoder = FrameDecoder(CipherState(KEY), max_payload=1 << 16)
    with contextlib.suppress(ProtocolError):
        decoder.feed(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 255), st.binary(max_size=600))
def test_any_frame_decodes_to_a_message_or_a_protocol_error(
    extension: int, message_type: int, payload: bytes
) -> None:
    try:
        message = m.decode(Frame(extension, message_type, payload))
    except m.Sv2ProtocolError:
        return
    assert isinstance(message, m.Message)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(m._TYPES)), st.binary(max_size=400))
def test_every_known_message_type_survives_any_payload(message_type: int, payload: bytes) -> None:
    try:
        m.decode(Frame(CHANNEL_BIT, message_type, payload))
    except m.Sv2ProtocolError as exc:
        assert "payload ends inside" in str(exc) or "limit" in str(exc) or "holds" in str(exc)


u32 = st.integers(0, 0xFFFF_FFFF)
u16 = st.integers(0, 0xFFFF)
u256 = st.integers(0, (1 << 256) - 1)
text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
b32 = st.binary(max_size=32)
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
hash32 = st.binary(min_size=32, max_size=32)

MESSAGES = st.one_of(
    st.builds(m.SetupConnection, u32, text, u16, text, text, text, text),
    st.builds(m.SetupConnectionSuccess, u16, u32),
    st.builds(m.SetupConnectionError, u32, text),
    st.builds(m.Reconnect, text, u16),
    st.builds(m.OpenExtendedMiningChannel, u32, text, f32, u256, u16),
    st.builds(m.OpenExtendedMiningChannelSuccess, u32, u32, u256, u16, b32, u32),
    st.builds(m.OpenMiningChannelError, u32, text),
    st.builds(m.UpdateChannel, u32, f32, u256),
    st.builds(m.UpdateChannelError, u32, text),
    st.builds(m.CloseChannel, u32, text),
    st.builds(m.SetExtranoncePrefix, u32, b32),
    st.builds(m.SubmitSharesExtended, u32, u32, u32, u32, u32, u32, b32),
    st.builds(m.SubmitSharesSuccess, u32, u32, u32, st.integers(0, (1 << 64) - 1)),
    st.builds(m.SubmitSharesError, u32, u32, text),
    st.builds(
        m.NewExtendedMiningJob,
        u32,
        u32,
        st.none() | u32,
        u32,
        st.booleans(),
        st.lists(hash32, max_size=12).map(tuple),
        st.binary(max_size=300),
        st.binary(max_size=300),
    ),
    st.builds(m.SetNewPrevHash, u32, u32, hash32, u32, u32),
    st.builds(m.SetTarget, u32, u256),
)


@settings(max_examples=400, deadline=None)
@given(MESSAGES)
def test_every_message_round_trips_through_its_frame(message: m.Message) -> None:
    assert m.decode(message.frame()) == message


@settings(max_examples=100, deadline=None)
@given(MESSAGES, st.binary(min_size=1, max_size=20))
def test_trailing_extension_fields_are_ignored(message: m.Message, tail: bytes) -> None:
    frame = message.frame()
    extended = Frame(frame.extension_type, frame.message_type, frame.payload + tail)
    assert m.decode(extended) == message


def test_an_older_channel_success_without_a_group_id_is_accepted() -> None:
    full = m.OpenExtendedMiningChannelSuccess(1, 2, 3, 4, b"\x05", 6)
    frame = full.frame()
    short = Frame(frame.extension_type, frame.message_type, frame.payload[:-4])
    assert m.decode(short) == m.OpenExtendedMiningChannelSuccess(1, 2, 3, 4, b"\x05", 0)


def test_pool_text_is_kept_printable_and_short() -> None:
    payload = struct.pack("<II", 1, 2) + bytes((255,)) + b"\x1b[31m" + b"A" * 250
    message = m.decode(Frame(CHANNEL_BIT, m.SubmitSharesError.TYPE, payload))
    assert isinstance(message, m.SubmitSharesError)
    assert message.error_code.isprintable()
    assert len(message.error_code) <= m.MAX_TEXT_CHARS


def test_an_option_with_two_values_is_refused() -> None:
    job = m.NewExtendedMiningJob(1, 2, 3, 4, True, (), b"", b"").payload()
    bad = job[:8] + b"\x02" + job[9:]
    with pytest.raises(m.Sv2ProtocolError, match="holds 2 values"):
        m.decode(Frame(CHANNEL_BIT, m.NewExtendedMiningJob.TYPE, bad))


def test_messages_of_other_extensions_are_unsupported_not_errors() -> None:
    message = m.decode(Frame(0x4001 | CHANNEL_BIT, 0x00, b"anything"))
    assert message == m.Unsupported(0xC001, 0x00)


def test_a_hashrate_that_is_not_a_number_goes_out_as_zero() -> None:
    update = m.UpdateChannel(1, math.nan, 0)
    decoded = m.decode(update.frame())
    assert isinstance(decoded, m.UpdateChannel)
    assert decoded.nominal_hash_rate == 0.0
