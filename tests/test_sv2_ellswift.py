"""ElligatorSwift and the X-only ECDH of BIP 324, against the BIP's own test vectors
(tests/data/bip324/, see SOURCE.md there), and as properties over random keys."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.agent.mining.sv2 import ellswift
from hashbay.agent.mining.sv2.ellswift import EllSwiftKey

DATA = Path(__file__).parent / "data" / "bip324"


def rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


DECODE = rows("ellswift_decode_test_vectors.csv")
INVERSE = rows("xswiftec_inv_test_vectors.csv")
ECDH = rows("ecdh_test_vectors.csv")


def test_the_vector_files_are_all_there() -> None:
    assert (len(DECODE), len(INVERSE), len(ECDH)) == (76, 32, 7)


@pytest.mark.parametrize("row", DECODE, ids=lambda row: row["ellswift"][:16])
def test_decoding_matches_bip324(row: dict[str, str]) -> None:
    assert ellswift.decode(bytes.fromhex(row["ellswift"])) == int(row["x"], 16)


@pytest.mark.parametrize("row", INVERSE, ids=lambda row: row["u"][:16])
def test_the_inverse_matches_bip324_in_all_eight_cases(row: dict[str, str]) -> None:
    u, x = int(row["u"], 16), int(row["x"], 16)
    for case in range(8):
        expected = row[f"case{case}_t"]
        t = ellswift.xswiftec_inv(x, u, case)
        assert t == (int(expected, 16) if expected else None), case
        if t is not None:
            assert ellswift.xswiftec(u, t) == x


@pytest.mark.parametrize("row", ECDH, ids=lambda row: row["in_idx"])
def test_the_shared_secret_matches_bip324(row: dict[str, str]) -> None:
    private = PrivateKey(bytes.fromhex(row["in_priv_ours"]))
    ours = bytes.fromhex(row["in_ellswift_ours"])
    theirs = bytes.fromhex(row["in_ellswift_theirs"])
    assert ellswift.decode(ours) == int(row["mid_x_ours"], 16)
    assert ellswift.ecdh_xonly(theirs, private).hex() == row["mid_x_shared"]
    secret = ellswift.v2_ecdh(private, theirs, ours, initiating=row["in_initiating"] == "1")
    assert secret.hex() == row["mid_shared_secret"]


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_a_fresh_encoding_decodes_to_its_key(secret: bytes) -> None:
    try:
        key = EllSwiftKey(secret)
    except ValueError:  # zero or beyond the group order: not a key
        return
    assert ellswift.decode(key.encoded) == key.x
    assert len(key.encoded) == 64


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=64, max_size=64))
def test_every_64_bytes_decode_to_a_point_on_the_curve(encoded: bytes) -> None:
    assert ellswift.on_curve(ellswift.decode(encoded))


def test_both_sides_derive_the_same_secret() -> None:
    alice, bob = EllSwiftKey(), EllSwiftKey()
    assert ellswift.v2_ecdh(
        alice.private, bob.encoded, alice.encoded, initiating=True
    ) == ellswift.v2_ecdh(bob.private, alice.encoded, bob.encoded, initiating=False)


def test_a_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        ellswift.decode(bytes(63))
    with pytest.raises(ValueError, match="not of this key"):
        EllSwiftKey(bytes(31) + b"\x01", encoded=EllSwiftKey().encoded)
