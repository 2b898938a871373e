"""Command parsing: untrusted bytes in, a valid Command or a message that says what to fix."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.agent.interfaces.commands import (
    COMMANDS,
    MAX_PAYLOAD_BYTES,
    Command,
    CommandError,
    describe_commands,
    parse_command,
)


def parse(data: object, slots: int = 3) -> Command:
    return parse_command(json.dumps(data).encode(), slots=slots)


def refusal(payload: bytes | object, slots: int = 3) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(CommandError) as caught:
        parse_command(raw, slots=slots)
    return str(caught.value)


def test_valid_commands_parse_to_their_arguments() -> None:
    assert parse({"command": "prepare_swap", "slot": 2}) == Command("prepare_swap", {"slot": 2})
    assert parse({"slot": 0, "command": "cancel_swap"}) == Command("cancel_swap", {"slot": 0})
    located = parse({"command": "locate", "slot": 1, "mode": "blink"})
    assert located.name == "locate"
    assert dict(located.args) == {"slot": 1, "mode": "blink"}


def test_command_arguments_cannot_be_changed_after_parsing() -> None:
    command = parse({"command": "prepare_swap", "slot": 1})
    with pytest.raises(TypeError):
        command.args["slot"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ([1, 2], "must be a JSON object"),
        ("prepare_swap", "must be a JSON object"),
        ({"slot": 1}, 'no "command" key; known commands: cancel_swap, curtail, fan_auto'),
        ({"command": "reboot"}, 'unknown command "reboot"; known commands: cancel_swap'),
        ({"command": 7}, "unknown command 7"),
        ({"command": "prepare_swap"}, 'prepare_swap: missing key "slot" (an integer slot number'),
        ({"command": "locate", "slot": 1}, 'locate: missing key "mode" (one of "on", "off"'),
        (
            {"command": "prepare_swap", "slot": 1, "force": True},
            'prepare_swap: unexpected key "force"; prepare_swap takes slot',
        ),
        (
            {"command": "prepare_swap", "slot": "1"},
            'slot must be an integer slot number from 0 to 2, got "1"',
        ),
        ({"command": "prepare_swap", "slot": True}, "got true"),
        ({"command": "prepare_swap", "slot": 1.0}, "got 1.0"),
        ({"command": "prepare_swap", "slot": 3}, "from 0 to 2, got 3"),
        ({"command": "prepare_swap", "slot": -1}, "got -1"),
        ({"command": "locate", "slot": 0, "mode": "flash"}, 'mode must be one of "on", "off"'),
        ({"command": "locate", "slot": 0, "mode": None}, "got null"),
        (b'{"command": "prepare_swap", "slot": 1, "slot": 2}', 'the key "slot" twice'),
        (b'{"command": "prepare_swap", "slot": NaN}', "NaN is not a number JSON allows"),
        (b"[" * 3000 + b"]" * 3000, "too many bytes"),
        (b"[" * 2000 + b"]" * 2000, "nested too deeply"),
    ],
)
def test_bad_commands_are_refused_with_what_is_wrong(payload: object, expected: str) -> None:
    message = refusal(payload)
    if expected == "too many bytes":
        assert f"at most {MAX_PAYLOAD_BYTES} are accepted" in message
    else:
        assert expected in message


def test_oversize_payload_is_refused_before_it_is_decoded() -> None:
    payload = json.dumps({"command": "prepare_swap", "slot": 1, "pad": "x" * 5000}).encode()
    assert refusal(payload).startswith(f"command is {len(payload)} bytes; at most 4096")


def test_slot_range_follows_the_slot_count() -> None:
    assert parse({"command": "prepare_swap", "slot": 5}, slots=8).args["slot"] == 5
    assert "from 0 to 0" in refusal({"command": "prepare_swap", "slot": 1}, slots=1)


def test_every_command_is_described() -> None:
    lines = describe_commands(3)
    assert len(lines) == len(COMMANDS)
    assert any(
        line.startswith("locate {slot: an integer slot number from 0 to 2") for line in lines
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_PAYLOAD_BYTES + 64))
def test_arbitrary_bytes_give_a_command_or_a_command_error(payload: bytes) -> None:
    try:
        command = parse_command(payload, slots=3)
    except CommandError as exc:
        assert str(exc)
    else:
        assert command.name in COMMANDS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(COMMANDS)),
    st.dictionaries(st.sampled_from(["slot", "mode", "extra"]), json_values, max_size=3),
)
def test_accepted_arguments_are_exactly_those_of_the_table(
    name: str, args: dict[str, object]
) -> None:
    try:
        command = parse({"command": name, **args})
    except CommandError:
        return
    spec = COMMANDS[name]
    assert set(command.args) == set(spec.args)
    if "slot" in spec.args:
        slot = command.args["slot"]
        assert type(slot) is int and 0 <= slot < 3
