"""A pool's authority public key as pools publish it: base58check in the `stratum2+tcp` URL.

The SV2 specification (section 4.7) encodes the 32-byte x-only key behind a
little-endian u16 version prefix, currently 1, then base58check. Decoding checks the
alphabet, the checksum, the prefix and that the key is a point on secp256k1, so a typo
in the configuration is an error at start-up rather than a refused handshake later.
"""

from __future__ import annotations

import hashlib

from hashbay.agent.mining.sv2.ellswift import P, on_curve

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
VERSION_PREFIX = b"\x01\x00"  # u16 1, little-endian
KEY_BYTES = 32
MAX_TEXT_CHARS = 64  # 38 bytes encode to at most 52 characters
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def base58check_encode(payload: bytes) -> str:
    data = payload + _checksum(payload)
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, digit = divmod(number, 58)
        digits.append(ALPHABET[digit])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def base58check_decode(text: str) -> bytes:
    """The payload under the checksum, or ValueError saying what is wrong."""
    if not text or len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"must be 1 to {MAX_TEXT_CHARS} base58 characters")
    number = 0
    for char in text:
        digit = _INDEX.get(char)
        if digit is None:
            raise ValueError(f"{char!r} is not a base58 character")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    data = b"\0" * zeros + body
    if len(data) < 5 or _checksum(data[:-4]) != data[-4:]:
        raise ValueError("checksum does not match (a typo in the key?)")
    return data[:-4]


def encode_authority_key(xonly: bytes) -> str:
    if len(xonly) != KEY_BYTES:
        raise ValueError(f"an authority key is {KEY_BYTES} bytes")
    return base58check_encode(VERSION_PREFIX + xonly)


def decode_authority_key(text: str) -> bytes:
    """The 32-byte x-only authority key from its URL form, or ValueError."""
    payload = base58check_decode(text)
    if len(payload) != len(VERSION_PREFIX) + KEY_BYTES:
        raise ValueError(f"must encode {len(VERSION_PREFIX) + KEY_BYTES} bytes")
    if payload[:2] != VERSION_PREFIX:
        raise ValueError(f"unknown key version {int.from_bytes(payload[:2], 'little')}")
    key = payload[2:]
    x = int.from_bytes(key, "big")
    if not 0 < x < P or not on_curve(x):
        raise ValueError("is not a secp256k1 public key")
    return key


SCHEME = "stratum2+tcp"


def authority_from_path(path: str) -> bytes:
    """The key from a `stratum2+tcp://host:port/<key>` URL's path, or ValueError."""
    text = path[1:] if path.startswith("/") else path
    if not text:
        raise ValueError(
            "needs the pool's authority key as its path: stratum2+tcp://host:port/<key>"
        )
    try:
        return decode_authority_key(text)
    except ValueError as exc:
        raise ValueError(f"authority key {text[:MAX_TEXT_CHARS]!r} {exc}") from None
