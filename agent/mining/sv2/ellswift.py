"""ElligatorSwift (BIP 324): secp256k1 x coordinates as 64 bytes that look random, and the
X-only ECDH the Stratum V2 handshake runs on them.

Stratum V2 sends every handshake key in this encoding. No published Python package
exposes it, so it is written out here from BIP 324's definitions (`XSwiftEC`, its
inverse, `XElligatorSwift`, `ellswift_ecdh_xonly`, `v2_ecdh`) and checked against the
BIP's test vectors (tests/data/bip324/). Field arithmetic is plain Python integers; the
scalar multiplication is libsecp256k1's, through coincurve. Nothing here is constant
time: it handles ephemeral keys and public data, as BIP 324 notes for the encoding.
"""

from __future__ import annotations

import hashlib
import secrets

from coincurve import PrivateKey, PublicKey

P = 2**256 - 2**32 - 977  # the secp256k1 field
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141  # the group order
C = 0xA2D2BA93507F1DF233770C2A797962CC61F6D15DA14ECD47D8D27AE1CD5F852  # sqrt(-3), the square one
ENCODED_BYTES = 64
_ECDH_TAG = hashlib.sha256(b"bip324_ellswift_xonly_ecdh").digest()


def _inv(a: int) -> int:
    return pow(a, P - 2, P)


def _sqrt(a: int) -> int | None:
    """The square root BIP 324 means (itself a square), or None when `a` has none."""
    root = pow(a, (P + 1) // 4, P)
    return root if root * root % P == a % P else None


def on_curve(x: int) -> bool:
    """Whether some point of secp256k1 has this x (lift_x succeeds)."""
    return _sqrt((pow(x, 3, P) + 7) % P) is not None


def xswiftec(u: int, t: int) -> int:
    """XSwiftEC: the x coordinate that field elements (u, t) decode to (always on the curve)."""
    u %= P
    t %= P
    if u == 0:
        u = 1
    if t == 0:
        t = 1
    if (pow(u, 3, P) + t * t + 7) % P == 0:
        t = 2 * t % P
    big_x = (pow(u, 3, P) + 7 - t * t) * _inv(2 * t) % P
    big_y = (big_x + t) * _inv(C * u % P) % P
    half = _inv(2)
    x_over_y = big_x * _inv(big_y) % P
    for x in (
        (u + 4 * big_y * big_y) % P,
        (-x_over_y - u) * half % P,
        (x_over_y - u) * half % P,
    ):
        if on_curve(x):
            return x
    raise AssertionError("XSwiftEC always finds a curve point")  # pragma: no cover


def xswiftec_inv(x: int, u: int, case: int) -> int | None:
    """XSwiftECInv: a t with XSwiftEC(u, t) = x, one of up to eight chosen by `case`."""
    if case & 2 == 0:
        if on_curve((-x - u) % P):
            return None
        v = x
        s = -(pow(u, 3, P) + 7) * _inv((u * u + u * v + v * v) % P) % P
    else:
        s = (x - u) % P
        if s == 0:
            return None
        r = _sqrt(-s * (4 * (pow(u, 3, P) + 7) + 3 * u * u * s) % P)
        if r is None or (case & 1 and r == 0):
            return None
        v = (r * _inv(s) - u) * _inv(2) % P
    w = _sqrt(s)
    if w is None:
        return None
    half = _inv(2)
    selected = case & 5
    if selected == 0:
        return -w * (u * (1 - C) * half + v) % P
    if selected == 1:
        return w * (u * (1 + C) * half + v) % P
    if selected == 4:
        return w * (u * (1 - C) * half + v) % P
    return -w * (u * (1 + C) * half + v) % P


def encode(x: int) -> bytes:
    """XElligatorSwift: a uniformly random 64-byte encoding of the curve x coordinate `x`."""
    while True:
        u = secrets.randbelow(P - 1) + 1
        t = xswiftec_inv(x, u, secrets.randbelow(8))
        if t is not None:
            return u.to_bytes(32, "big") + t.to_bytes(32, "big")


def decode(encoded: bytes) -> int:
    """The x coordinate 64 encoded bytes stand for; every 64-byte string decodes to one."""
    if len(encoded) != ENCODED_BYTES:
        raise ValueError(f"an ElligatorSwift key is {ENCODED_BYTES} bytes, got {len(encoded)}")
    return xswiftec(int.from_bytes(encoded[:32], "big"), int.from_bytes(encoded[32:], "big"))


def x_only(point: PublicKey) -> int:
    return int.from_bytes(point.format(compressed=True)[1:], "big")


def lift_x(x: int) -> PublicKey:
    """The curve point with this x and an even y."""
    return PublicKey(b"\x02" + x.to_bytes(32, "big"))


class EllSwiftKey:
    """A private key with its ElligatorSwift-encoded public key (`ellswift_create`)."""

    def __init__(self, secret: bytes | None = None, encoded: bytes | None = None) -> None:
        """A fresh random key, or a given one; `encoded` (tests) fixes its encoding."""
        self.private = PrivateKey(secret) if secret is not None else PrivateKey()
        self.x = x_only(self.private.public_key)
        if encoded is not None and decode(encoded) != self.x:
            raise ValueError("the encoding is not of this key")
        self.encoded = encoded if encoded is not None else encode(self.x)

    @property
    def xonly(self) -> bytes:
        return self.x.to_bytes(32, "big")


def ecdh_xonly(theirs: bytes, private: PrivateKey) -> bytes:
    """ellswift_ecdh_xonly: x(priv · lift_x(decode(theirs))), 32 bytes."""
    shared = lift_x(decode(theirs)).multiply(private.secret)
    return x_only(shared).to_bytes(32, "big")


def v2_ecdh(private: PrivateKey, theirs: bytes, ours: bytes, *, initiating: bool) -> bytes:
    """BIP 324's shared secret: the tagged hash of both encodings (initiator's first) and
    the X-only ECDH result. Stratum V2's handshake `ECDH()` is exactly this."""
    point_x = ecdh_xonly(theirs, private)
    keys = ours + theirs if initiating else theirs + ours
    return hashlib.sha256(_ECDH_TAG + _ECDH_TAG + keys + point_x).digest()
