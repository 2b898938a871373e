"""The Stratum V2 handshake and certificate, and the authority key in the pool URL.

The specification has no handshake test vectors; it has the authority key's worked
example (section 4.7.1), which is checked here, and the reference implementation's
hashed protocol name. The handshake is checked as a pair: what one side derives the
other must, and any change to the pool's answer must be refused."""

from __future__ import annotations

import contextlib
import time

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbay.agent.mining.sv2 import keys, noise
from hashbay.agent.mining.sv2.ellswift import EllSwiftKey

SPEC_KEY = bytes(
    [118, 99, 112, 0, 151, 156, 28, 17, 175, 12, 48, 11, 205, 140, 127, 228,
     134, 16, 252, 233, 185, 193, 30, 61, 174, 227, 90, 224, 176, 138, 116, 85]
)  # fmt: skip
SPEC_TEXT = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh"
# The reference implementation's NOISE_HASHED_PROTOCOL_NAME_CHACHA (noise-sv2, lib.rs).
REFERENCE_HASHED_NAME = bytes(
    [46, 180, 120, 129, 32, 142, 158, 238, 31, 102, 159, 103, 198, 110, 231, 14,
     169, 234, 136, 9, 13, 80, 63, 232, 48, 220, 75, 200, 62, 41, 191, 16]
)  # fmt: skip
NOW = 1_800_000_000


def test_the_authority_key_encodes_as_the_specifications_example() -> None:
    assert keys.encode_authority_key(SPEC_KEY) == SPEC_TEXT
    assert keys.decode_authority_key(SPEC_TEXT) == SPEC_KEY


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (SPEC_TEXT[:-1] + "j", "checksum"),
        (SPEC_TEXT.replace("9", "0", 1), "not a base58 character"),
        ("", "1 to 64"),
        ("x" * 65, "1 to 64"),
        (keys.base58check_encode(b"\x02\x00" + SPEC_KEY), "unknown key version 2"),
        (keys.base58check_encode(b"\x01\x00" + SPEC_KEY[:31]), "must encode 34 bytes"),
        (keys.base58check_encode(b"\x01\x00" + b"\xff" * 32), "not a secp256k1 public key"),
    ],
)
def test_a_bad_authority_key_says_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        keys.decode_authority_key(text)


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_any_text_as_a_key_is_a_key_or_a_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert len(keys.decode_authority_key(text)) == 32


def test_the_protocol_name_hashes_as_in_the_reference_implementation() -> None:
    state = noise._HandshakeState()
    assert state.ck == REFERENCE_HASHED_NAME


class Pool:
    def __init__(self, *, valid_from: int = NOW - 60, not_valid_after: int = NOW + 3600) -> None:
        self.authority = PrivateKey()
        self.static = EllSwiftKey()
        self.certificate = noise.sign_certificate(
            self.authority,
            self.static.xonly,
            valid_from=valid_from,
            not_valid_after=not_valid_after,
        )

    def answer(self, act1: bytes) -> tuple[bytes, noise.Transport]:
        return noise.Responder(self.static, self.certificate).act2(act1)


def test_a_handshake_gives_both_sides_matching_ciphers_both_ways() -> None:
    pool = Pool()
    miner = noise.Initiator(noise.xonly_of(pool.authority))
    act1 = miner.act1()
    act2, pool_side = pool.answer(act1)
    assert (len(act1), len(act2)) == (noise.ACT1_BYTES, 234)
    miner_side = miner.act2(act2, now=NOW)
    assert miner.server_xonly == pool.static.xonly
    assert miner.certificate == pool.certificate
    for n in range(3):
        up = miner_side.send.encrypt(b"", b"share %d" % n)
        assert pool_side.receive.decrypt(b"", up) == b"share %d" % n
        down = pool_side.send.encrypt(b"", b"job %d" % n)
        assert miner_side.receive.decrypt(b"", down) == b"job %d" % n


def test_the_wire_carries_nothing_in_the_clear() -> None:
    pool = Pool()
    miner = noise.Initiator(noise.xonly_of(pool.authority))
    act2, _ = pool.answer(miner.act1())
    assert pool.static.encoded not in act2
    assert pool.certificate.signature not in act2


@pytest.mark.parametrize(
    ("pool", "now", "why"),
    [
        (Pool(not_valid_after=NOW - 11), NOW, "certificate expired at 2027-01-15"),
        (Pool(valid_from=NOW + 11), NOW, "not valid before"),
    ],
)
def test_a_certificate_outside_its_window_is_refused(pool: Pool, now: int, why: str) -> None:
    miner = noise.Initiator(noise.xonly_of(pool.authority))
    act2, _ = pool.answer(miner.act1())
    with pytest.raises(noise.CertificateError, match=why):
        miner.act2(act2, now=now)


def test_a_few_seconds_of_clock_difference_are_allowed() -> None:
    pool = Pool(valid_from=NOW + 5, not_valid_after=NOW + 20)
    miner = noise.Initiator(noise.xonly_of(pool.authority))
    act2, _ = pool.answer(miner.act1())
    miner.act2(act2, now=NOW)


def test_a_certificate_from_another_authority_is_refused() -> None:
    pool = Pool()
    miner = noise.Initiator(noise.xonly_of(PrivateKey()))
    act2, _ = pool.answer(miner.act1())
    with pytest.raises(noise.CertificateError, match="not signed by the authority key"):
        miner.act2(act2, now=NOW)


def test_a_certificate_for_another_static_key_is_refused() -> None:
    pool = Pool()
    pool.static = EllSwiftKey()  # the certificate vouches for the old one
    miner = noise.Initiator(noise.xonly_of(pool.authority))
    act2, _ = pool.answer(miner.act1())
    with pytest.raises(noise.CertificateError, match="not signed by the authority key"):
        miner.act2(act2, now=NOW)


def test_an_unknown_certificate_version_is_refused() -> None:
    pool = Pool()
    pool.certificate = noise.sign_certificate(
        pool.authority, pool.static.xonly, valid_from=NOW, not_valid_after=NOW + 9, version=1
    )
    miner = noise.Initiator(noise.xonly_of(pool.authority))
    act2, _ = pool.answer(miner.act1())
    with pytest.raises(noise.CertificateError, match="unknown certificate version 1"):
        miner.act2(act2, now=NOW)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 233), st.integers(1, 255))
def test_any_change_to_the_pools_answer_is_refused(index: int, flip: int) -> None:
    pool = Pool()
    miner = noise.Initiator(noise.xonly_of(pool.authority))
    act2, _ = pool.answer(miner.act1())
    tampered = bytearray(act2)
    tampered[index] ^= flip
    with pytest.raises(noise.NoiseError):
        miner.act2(bytes(tampered), now=NOW)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_an_answer_are_refused_as_a_noise_error(data: bytes) -> None:
    miner = noise.Initiator(noise.xonly_of(PrivateKey()))
    miner.act1()
    with pytest.raises(noise.NoiseError):
        miner.act2(data, now=NOW)


def test_a_failed_decryption_leaves_the_nonce_so_the_stream_is_not_desynchronised() -> None:
    key = bytes(range(32))
    sender, receiver = noise.CipherState(key), noise.CipherState(key)
    sealed = sender.encrypt(b"", b"hello")
    with pytest.raises(noise.NoiseError):
        receiver.decrypt(b"", sealed[:-1] + bytes((sealed[-1] ^ 1,)))
    assert receiver.nonce == 0
    assert receiver.decrypt(b"", sealed) == b"hello"


def test_the_nonce_is_little_endian_after_four_zero_bytes() -> None:
    cipher = noise.CipherState(bytes(32))
    cipher.nonce = 0x0102
    assert cipher._nonce_bytes() == bytes(4) + b"\x02\x01" + bytes(6)


def test_a_certificate_round_trips_through_its_74_bytes() -> None:
    certificate = noise.Certificate(0, 1, 2, bytes(range(64)))
    assert len(certificate.encode()) == noise.CERTIFICATE_BYTES
    assert noise.Certificate.parse(certificate.encode()) == certificate
    with pytest.raises(noise.NoiseError):
        noise.Certificate.parse(bytes(73))


def test_the_certificate_check_uses_real_time_by_default() -> None:
    now = int(time.time())
    pool = Pool(valid_from=now - 5, not_valid_after=now + 60)
    pool.certificate.check(pool.static.xonly, noise.xonly_of(pool.authority), time.time())
