"""Stratum V1 parsing and share arithmetic: known Bitcoin vectors, and fuzzing for the
guarantee that a pool's bytes either parse into checked values or raise one error type."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.agent.mining import stratum_protocol as sp
from hashbay.agent.mining.stratum_work import chip_job, coinbase, merkle_root, share_hash
from hashbay.drivers.bm13xx.work import sha256d
from hashbay.tools.pool import TestPool

# Bitcoin's first block: its coinbase transaction, merkle root and header.
GENESIS_COINBASE = bytes.fromhex(
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04"
    "ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e"
    "206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f205"
    "2a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6"
    "bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
)
GENESIS_MERKLE = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"


def genesis_notify_params() -> list[Any]:
    """The genesis block as a pool would send it: the coinbase split around 8 bytes of
    its scriptSig, which play extranonce1 and extranonce2."""
    return [
        "genesis",
        "00" * 32,
        GENESIS_COINBASE[:50].hex(),
        GENESIS_COINBASE[58:].hex(),
        [],
        "00000001",
        "1d00ffff",
        f"{1231006505:08x}",
        True,
    ]


def test_genesis_block_rebuilt_from_a_notify_hashes_to_the_known_block_hash() -> None:
    notify = sp.parse_notify(genesis_notify_params())
    job = chip_job(notify, GENESIS_COINBASE[50:54], GENESIS_COINBASE[54:58], job_id=3)
    assert coinbase(notify, GENESIS_COINBASE[50:54], GENESIS_COINBASE[54:58]) == GENESIS_COINBASE
    assert job.merkle_root[::-1].hex() == GENESIS_MERKLE
    digest = sha256d(
        job.version.to_bytes(4, "little")
        + job.prev_hash
        + job.merkle_root
        + (1231006505).to_bytes(4, "little")
        + (0x1D00FFFF).to_bytes(4, "little")
        + (2083236893).to_bytes(4, "little")
    )
    assert digest[::-1].hex() == GENESIS_HASH
    assert share_hash(job, 1, 2083236893) == int(GENESIS_HASH, 16)


def test_stratum_prevhash_word_order_maps_to_the_block_hash_as_displayed() -> None:
    # The example from the original Stratum documentation.
    stratum = "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000"
    params = genesis_notify_params()
    params[1] = stratum
    notify = sp.parse_notify(params)
    assert notify.prev_hash[::-1].hex() == (
        "00000000440b921e1b77c6c0487ae5616de67f788f44ae2a5af6e2194d16b6f8"
    )


def test_merkle_root_folds_each_branch_onto_the_coinbase_hash() -> None:
    branch_a, branch_b = bytes(range(32)), bytes(range(32, 64))
    expected = sha256d(sha256d(sha256d(b"cb") + branch_a) + branch_b)
    assert merkle_root(b"cb", (branch_a, branch_b)) == expected


def test_difficulty_one_is_the_classic_target_and_sim_difficulty_matches_eight_zero_bits() -> None:
    assert sp.target_of(1) == 0x00000000FFFF0000000000000000000000000000000000000000000000000000
    assert sp.target_of(2**-24) == 0xFFFF << 232
    assert sp.target_of(1e-80) == sp.MAX_TARGET
    assert sp.difficulty_of(sp.DIFF1_TARGET) == 1.0
    with pytest.raises(ValueError, match="positive"):
        sp.target_of(0.0)


def test_submit_params_are_hex_of_the_header_values_and_the_rolled_bits() -> None:
    params = sp.submit_params(
        "acct.w1",
        job_id="1a",
        extranonce2=b"\x00\x00\x00\x07",
        ntime=0x6553F100,
        nonce=0x1D_AC2B7C,
        version_bits=0x0000_6000,
    )
    assert params == ["acct.w1", "1a", "00000007", "6553f100", "1dac2b7c", "00006000"]
    no_rolling = sp.submit_params(
        "u", job_id="1", extranonce2=b"\x01", ntime=1, nonce=2, version_bits=None
    )
    assert len(no_rolling) == 5


def test_messages_decode_into_responses_and_calls() -> None:
    answer = sp.decode_line(b'{"id": 4, "result": true, "error": null}\n')
    assert answer == sp.Response(4, True, None)
    refused = sp.decode_line(b'{"id": 5, "result": null, "error": [23, "Low difficulty", null]}')
    assert refused == sp.Response(5, None, "Low difficulty (23)")
    call = sp.decode_line(b'{"id": null, "method": "mining.set_difficulty", "params": [8]}')
    assert call == sp.Call(None, "mining.set_difficulty", [8])
    assert sp.error_text({"code": 21, "message": "Stale"}) == "Stale (21)"
    assert sp.error_text("nope") == "nope"


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"id": 1}', "neither result nor error"),
        (b'{"method": 7}', "bad method"),
        (b'{"method": "mining.notify", "params": "x"}', "params must be a list"),
        (b'{"id": 1.5, "result": true}', "bad message id"),
        (b"[" * 100_000, "not JSON"),
        (b'{"id": ' + b"9" * 5000 + b', "result": 1}', "not JSON"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_lines_are_protocol_errors_that_say_what_is_wrong(
    line: bytes, complaint: str
) -> None:
    with pytest.raises(sp.StratumProtocolError, match=complaint):
        sp.decode_line(line)


@pytest.mark.parametrize(
    ("index", "value", "complaint"),
    [
        (0, 7, "bad job id"),
        (1, "00" * 31, "32 bytes"),
        (1, "zz" * 32, "hex"),
        (2, "abc", "hex"),
        (4, ["00" * 31], "merkle branch 0"),
        (4, ["00" * 32] * 33, "at most 32"),
        (5, 536870912, "8 hex digits"),
        (6, "1d00fff", "8 hex digits"),
        (8, "yes", "clean_jobs"),
    ],
)
def test_a_notify_with_a_bad_field_names_the_field(index: int, value: Any, complaint: str) -> None:
    params = genesis_notify_params()
    params[index] = value
    with pytest.raises(sp.StratumProtocolError, match=complaint):
        sp.parse_notify(params)


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "8", True, 10**400, None])
def test_nonsense_difficulties_are_refused(value: Any) -> None:
    with pytest.raises(sp.StratumProtocolError, match="difficulty"):
        sp.parse_difficulty([value])


def test_subscribe_configure_and_reconnect_results_are_checked() -> None:
    assert sp.parse_subscribe([[], "0a0b0c0d", 4]) == sp.Subscription(b"\x0a\x0b\x0c\x0d", 4)
    with pytest.raises(sp.StratumProtocolError, match="extranonce2 size"):
        sp.parse_subscribe([[], "0a0b0c0d", 0])
    assert sp.parse_configure({"version-rolling": True, "version-rolling.mask": "1fffe000"}) == (
        0x1FFFE000
    )
    assert sp.parse_configure({"version-rolling": False}) == 0
    assert sp.parse_reconnect(["pool.example", "3334", 5]) == sp.Reconnect("pool.example", 3334, 5)
    assert sp.parse_reconnect([]) == sp.Reconnect(None, None, 0)
    with pytest.raises(sp.StratumProtocolError, match="port"):
        sp.parse_reconnect(["h", 70000])


def test_the_test_pools_notify_round_trips_through_the_parser() -> None:
    pool = TestPool(seed=3)
    job = pool.current
    assert sp.parse_notify(json.loads(json.dumps(job.params(True)))) == job.notify(True)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=80)
    | st.sampled_from(["00" * 32, "1fffe000", "20000000", "ffffffff", "0a0b"]),
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=8,
)
PARSERS = [
    sp.parse_notify,
    sp.parse_difficulty,
    sp.parse_set_extranonce,
    sp.parse_version_mask,
    sp.parse_reconnect,
]


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_decode_or_raise_a_protocol_error(line: bytes) -> None:
    try:
        message = sp.decode_line(line)
    except sp.StratumProtocolError:
        return
    assert isinstance(message, sp.Response | sp.Call)


@settings(max_examples=80, deadline=None)
@given(st.lists(json_values, max_size=10), st.sampled_from(PARSERS))
def test_any_params_parse_or_raise_a_protocol_error(params: list[Any], parse: Any) -> None:
    with contextlib.suppress(sp.StratumProtocolError):
        parse(params)


@settings(max_examples=80, deadline=None)
@given(json_values)
def test_any_subscribe_or_configure_result_parses_or_raises_a_protocol_error(value: Any) -> None:
    for parse in (sp.parse_subscribe, sp.parse_configure):
        with contextlib.suppress(sp.StratumProtocolError):
            parse(value)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.binary(min_size=32, max_size=32), max_size=5),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_notify_fields_survive_the_wire(branches: list[bytes], ntime: int, clean: bool) -> None:
    params = genesis_notify_params()
    params[4] = [b.hex() for b in branches]
    params[7] = f"{ntime:08x}"
    params[8] = clean
    line = json.dumps({"id": None, "method": "mining.notify", "params": params}).encode()
    message = sp.decode_line(line)
    assert isinstance(message, sp.Call)
    notify = sp.parse_notify(message.params)
    assert notify.merkle_branches == tuple(branches)
    assert (notify.ntime, notify.clean) == (ntime, clean)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 8), json_values)
def test_a_notify_with_any_one_field_replaced_parses_or_raises(index: int, value: Any) -> None:
    params = genesis_notify_params()
    params[index] = value
    try:
        notify = sp.parse_notify(params)
    except sp.StratumProtocolError:
        return
    assert len(notify.prev_hash) == 32
    assert all(len(b) == 32 for b in notify.merkle_branches)
