"""The control socket's wire format: frames, requests and replies, fuzzed."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.agent.interfaces.control_protocol import (
    HEADER,
    MAX_REQUEST_BYTES,
    ControlProtocolError,
    ErrorCode,
    EventFrame,
    FrameDecoder,
    Reply,
    decode_body,
    encode_frame,
    error_reply,
    event_message,
    frame_length,
    ok_reply,
    parse_request,
    parse_server_message,
    request_message,
)

SLOTS = 3


def body(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def test_a_request_survives_the_round_trip() -> None:
    frame = encode_frame(request_message(7, "slot", {"slot": 2}))
    length = frame_length(frame[:4])
    assert length == len(frame) - 4
    request = parse_request(decode_body(frame[4:]), slots=SLOTS)
    assert (request.id, request.op, dict(request.args)) == (7, "slot", {"slot": 2})


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ({"v": 2, "id": 1, "op": "status"}, ErrorCode.VERSION, "speaks version 1"),
        ({"id": 1, "op": "status"}, ErrorCode.VERSION, "version None"),
        ({"v": 1, "op": "status"}, ErrorCode.BAD_REQUEST, "request id"),
        ({"v": 1, "id": -1, "op": "status"}, ErrorCode.BAD_REQUEST, "request id"),
        ({"v": 1, "id": True, "op": "status"}, ErrorCode.BAD_REQUEST, "request id"),
        ({"v": 1, "id": 1, "op": "status", "x": 1}, ErrorCode.BAD_REQUEST, "unexpected"),
        ({"v": 1, "id": 1, "op": "reboot"}, ErrorCode.UNKNOWN_OP, "known ops: hello"),
        ({"v": 1, "id": 1, "op": 5}, ErrorCode.UNKNOWN_OP, "unknown op 5"),
        ({"v": 1, "id": 1, "op": "slot"}, ErrorCode.BAD_ARGS, "missing slot"),
        ({"v": 1, "id": 1, "op": "slot", "args": {"slot": 3}}, ErrorCode.BAD_ARGS, "0 to 2"),
        ({"v": 1, "id": 1, "op": "slot", "args": {"slot": "1"}}, ErrorCode.BAD_ARGS, "'1'"),
        ({"v": 1, "id": 1, "op": "status", "args": {"a": 1}}, ErrorCode.BAD_ARGS, "no argum"),
        ({"v": 1, "id": 1, "op": "status", "args": [1]}, ErrorCode.BAD_ARGS, "must be a map"),
        ({"v": 1, "id": 1, "op": "events", "args": {"limit": 0}}, ErrorCode.BAD_ARGS, "1 to"),
    ],
)
def test_bad_requests_are_refused_saying_what_is_wrong(
    message: dict[str, Any], code: ErrorCode, words: str
) -> None:
    with pytest.raises(ControlProtocolError) as caught:
        parse_request(message, slots=SLOTS)
    assert caught.value.code is code
    assert words in str(caught.value)


def test_framing_errors_are_fatal_but_argument_errors_keep_the_connection() -> None:
    assert ControlProtocolError(ErrorCode.TOO_LARGE, "").fatal
    assert ControlProtocolError(ErrorCode.BAD_FRAME, "").fatal
    assert not ControlProtocolError(ErrorCode.BAD_ARGS, "").fatal
    assert not ControlProtocolError(ErrorCode.DENIED, "").fatal


def test_an_error_reply_keeps_the_request_id_when_it_was_readable() -> None:
    with pytest.raises(ControlProtocolError) as caught:
        parse_request({"v": 1, "id": 42, "op": "nope"}, slots=SLOTS)
    assert caught.value.request_id == 42


def test_the_events_limit_is_optional() -> None:
    assert parse_request({"v": 1, "id": 1, "op": "events"}, slots=SLOTS).args == {}


def test_command_args_are_left_to_the_command_table() -> None:
    args = {"command": "locate", "slot": 9, "mode": "disco"}
    request = parse_request({"v": 1, "id": 1, "op": "command", "args": args}, slots=SLOTS)
    assert dict(request.args) == args


def test_oversized_frames_are_refused_by_their_header() -> None:
    with pytest.raises(ControlProtocolError) as caught:
        frame_length(HEADER.pack(MAX_REQUEST_BYTES + 1))
    assert caught.value.code is ErrorCode.TOO_LARGE
    with pytest.raises(ControlProtocolError):
        frame_length(HEADER.pack(0))
    with pytest.raises(ControlProtocolError):
        encode_frame({"blob": "x" * 100}, limit=50)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"\xc1", "not valid msgpack"),  # never-used byte
        (body([1, 2]), "map"),
        (body({1: 2}), "not valid msgpack"),  # strict map keys
        (body({b"k": 1}), "text"),
        (body({"a": 1}) + b"\x00", "not valid msgpack"),  # trailing bytes
        (b"\x91" * 5000 + b"\x01", "not valid msgpack"),  # nesting bomb
        (b"\xdd\xff\xff\xff\xff", "not valid msgpack"),  # a 4-billion-item array header
        (b"\x81\xa1a\xd6\xff\x00\x00\x00\x01", "not valid msgpack"),  # extension type
    ],
)
def test_garbage_bodies_are_refused(raw: bytes, words: str) -> None:
    with pytest.raises(ControlProtocolError) as caught:
        decode_body(raw)
    assert caught.value.code is ErrorCode.BAD_FRAME
    assert words in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_refused_cleanly(raw: bytes) -> None:
    try:
        message = decode_body(raw)
    except ControlProtocolError:
        return
    with contextlib.suppress(ControlProtocolError):
        parse_request(message, slots=SLOTS)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_like, max_size=6))
def test_any_map_is_a_request_or_a_clear_refusal(message: dict[str, Any]) -> None:
    try:
        request = parse_request(message, slots=SLOTS)
    except ControlProtocolError as exc:
        assert str(exc)
        return
    assert request.op in (
        "hello",
        "status",
        "slots",
        "slot",
        "fans",
        "events",
        "subscribe",
        "command",
    )


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(), max_size=3
        ),
        max_size=5,
    ),
    st.lists(st.integers(1, 50), min_size=1, max_size=10),
)
def test_frames_split_anywhere_come_out_whole(
    messages: list[dict[str, Any]], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(m) for m in messages)
    decoder = FrameDecoder()
    out: list[dict[str, Any]] = []
    position = 0
    for cut in cuts * (len(stream) // max(1, sum(cuts)) + 1):
        out += decoder.feed(stream[position : position + cut])
        position += cut
        if position >= len(stream):
            break
    out += decoder.feed(stream[position:])
    assert out == messages
    assert decoder.pending == 0


def test_server_messages_are_checked_by_the_client() -> None:
    reply = parse_server_message(ok_reply(3, {"a": 1}))
    assert reply == Reply(3, True, {"a": 1})
    refused = parse_server_message(error_reply(4, ErrorCode.DENIED, "no"))
    assert isinstance(refused, Reply)
    assert (refused.ok, refused.error_code, refused.error_message) == (False, "denied", "no")
    event = parse_server_message(event_message({"kind": "fault"}, 2))
    assert event == EventFrame({"kind": "fault"}, 2)
    for bad in ({"v": 9, "ok": True}, {"v": 1}, {"v": 1, "ok": False}, {"v": 1, "event": 3}):
        with pytest.raises(ControlProtocolError):
            parse_server_message(bad)


def test_agent_values_go_out_as_plain_msgpack_that_strict_clients_read() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    reply = ok_reply(1, {"budgets_w": {0: 100.0}, "tags": ("a", "b"), "who": Odd(), "n": 2**70})
    decoded = decode_body(encode_frame(reply)[4:])
    assert decoded["result"] == {
        "budgets_w": {"0": 100.0},
        "tags": ["a", "b"],
        "who": "odd",
        "n": str(2**70),
    }
