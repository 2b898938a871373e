"""The Stratum V2 handshake, `Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256`, and the pool's
certificate (SV2 specification, section 4).

Act 1 (miner to pool): the miner's ephemeral key, 64 bytes of ElligatorSwift. Act 2 (pool
to miner), 234 bytes: the pool's ephemeral key (64), its static key encrypted (64 + 16
MAC) and the certificate encrypted (74 + 16 MAC). The specification's table says 170
bytes; its own field list adds up to 234, which is what implementations send. The
certificate binds the pool's static key to the authority key the operator put in the
URL: a BIP 340 Schnorr signature over SHA-256(version, valid_from, not_valid_after, the
static key's x), checked together with its validity window. Both roles are here because
the test pool answers the handshake too. Pure: bytes in, bytes and keys out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import struct
from dataclasses import dataclass

from coincurve import PrivateKey, PublicKeyXOnly
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from hashbay.agent.mining.sv2 import ellswift
from hashbay.agent.mining.sv2.ellswift import EllSwiftKey
from hashbay.drivers.errors import ProtocolError

PROTOCOL_NAME = b"Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256"
MAC_BYTES = 16
KEY_BYTES = ellswift.ENCODED_BYTES
CERTIFICATE_BYTES = 74  # version u16, valid_from u32, not_valid_after u32, signature 64
ACT1_BYTES = KEY_BYTES
ACT2_BYTES = KEY_BYTES + (KEY_BYTES + MAC_BYTES) + (CERTIFICATE_BYTES + MAC_BYTES)
CERTIFICATE_VERSION = 0
CLOCK_LEEWAY_S = 10  # as the reference implementation allows
_CERT_HEAD = struct.Struct("<HII")


class NoiseError(ProtocolError):
    """The handshake or an encrypted frame failed (a MAC did not verify, wrong size)."""


class CertificateError(NoiseError):
    """The pool's certificate is refused; the message says why, for the operator."""


class CipherState:
    """ChaCha20-Poly1305 with a counting nonce (Noise's CipherState); no key: pass-through."""

    __slots__ = ("_aead", "nonce")

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = ChaCha20Poly1305(key) if key is not None else None
        self.nonce = 0

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    def _nonce_bytes(self) -> bytes:
        return b"\0\0\0\0" + self.nonce.to_bytes(8, "little")

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        sealed = self._aead.encrypt(self._nonce_bytes(), plaintext, ad)
        self.nonce += 1
        return sealed

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        """The plaintext; NoiseError (nonce unchanged) when the MAC does not verify."""
        if self._aead is None:
            return ciphertext
        try:
            opened = self._aead.decrypt(self._nonce_bytes(), ciphertext, ad)
        except InvalidTag:
            raise NoiseError(
                "a message failed authentication (tampered with, or not from the pool)"
            ) from None
        self.nonce += 1
        return opened


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def hkdf2(chaining_key: bytes, material: bytes) -> tuple[bytes, bytes]:
    """HKDF (RFC 5869) with empty info and two outputs, as Noise uses it."""
    temp = _hmac(chaining_key, material)
    first = _hmac(temp, b"\x01")
    return first, _hmac(temp, first + b"\x02")


class _HandshakeState:
    """h, ck and the handshake cipher; the operations both roles share."""

    def __init__(self) -> None:
        self.ck = hashlib.sha256(PROTOCOL_NAME).digest()  # longer than 32 bytes: hashed
        self.h = hashlib.sha256(self.ck).digest()
        self.cipher = CipherState()

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, material: bytes) -> None:
        self.ck, key = hkdf2(self.ck, material)
        self.cipher = CipherState(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator to responder, responder to initiator)."""
        first, second = hkdf2(self.ck, b"")
        return CipherState(first), CipherState(second)


@dataclass(frozen=True)
class Transport:
    """The two cipher states of an established session, from one side's point of view."""

    send: CipherState
    receive: CipherState


@dataclass(frozen=True)
class Certificate:
    """SIGNATURE_NOISE_MESSAGE: the pool's static key, vouched for by its authority."""

    version: int
    valid_from: int  # unix time
    not_valid_after: int
    signature: bytes

    def encode(self) -> bytes:
        return _CERT_HEAD.pack(self.version, self.valid_from, self.not_valid_after) + self.signature

    @classmethod
    def parse(cls, data: bytes) -> Certificate:
        if len(data) != CERTIFICATE_BYTES:
            raise NoiseError(f"a certificate is {CERTIFICATE_BYTES} bytes, got {len(data)}")
        version, valid_from, not_valid_after = _CERT_HEAD.unpack_from(data)
        return cls(version, valid_from, not_valid_after, bytes(data[_CERT_HEAD.size :]))

    def signed_hash(self, server_xonly: bytes) -> bytes:
        head = _CERT_HEAD.pack(self.version, self.valid_from, self.not_valid_after)
        return hashlib.sha256(head + server_xonly).digest()

    def check(self, server_xonly: bytes, authority_xonly: bytes, now: float) -> None:
        """CertificateError unless it is current and signed by the authority key."""
        if self.version != CERTIFICATE_VERSION:
            raise CertificateError(f"unknown certificate version {self.version}")
        if now + CLOCK_LEEWAY_S < self.valid_from:
            raise CertificateError(
                f"certificate not valid before {_when(self.valid_from)} "
                f"(now {_when(now)}; check this system's clock)"
            )
        if now - CLOCK_LEEWAY_S > self.not_valid_after:
            raise CertificateError(
                f"certificate expired at {_when(self.not_valid_after)} "
                f"(now {_when(now)}; check this system's clock)"
            )
        try:
            valid = PublicKeyXOnly(authority_xonly).verify(
                self.signature, self.signed_hash(server_xonly)
            )
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise CertificateError(
                "certificate is not signed by the authority key in the pool URL "
                "(wrong key in the URL, or not the pool it claims to be)"
            )


def sign_certificate(
    authority: PrivateKey,
    server_xonly: bytes,
    *,
    valid_from: int,
    not_valid_after: int,
    version: int = CERTIFICATE_VERSION,
) -> Certificate:
    """What a pool operator's tooling does; the test pool uses it."""
    unsigned = Certificate(version, valid_from, not_valid_after, b"")
    signature = authority.sign_schnorr(unsigned.signed_hash(server_xonly))
    return Certificate(version, valid_from, not_valid_after, signature)


def xonly_of(private: PrivateKey) -> bytes:
    return ellswift.x_only(private.public_key).to_bytes(32, "big")


class Initiator:
    """The miner's side: act 1 out, act 2 in, the pool's certificate checked."""

    def __init__(self, authority_xonly: bytes, *, ephemeral: EllSwiftKey | None = None) -> None:
        self._authority = authority_xonly
        self._e = ephemeral or EllSwiftKey()
        self._state = _HandshakeState()
        self.server_xonly = b""
        self.certificate: Certificate | None = None

    def act1(self) -> bytes:
        self._state.mix_hash(self._e.encoded)
        self._state.encrypt_and_hash(b"")
        return self._e.encoded

    def act2(self, message: bytes, *, now: float) -> Transport:
        """Process the pool's answer; NoiseError (CertificateError) when it is refused."""
        if len(message) != ACT2_BYTES:
            raise NoiseError(f"handshake answer must be {ACT2_BYTES} bytes, got {len(message)}")
        state, e = self._state, self._e
        re = message[:KEY_BYTES]
        state.mix_hash(re)
        state.mix_key(ellswift.v2_ecdh(e.private, re, e.encoded, initiating=True))
        rs = state.decrypt_and_hash(message[KEY_BYTES : 2 * KEY_BYTES + MAC_BYTES])
        state.mix_key(ellswift.v2_ecdh(e.private, rs, e.encoded, initiating=True))
        sealed_certificate = message[2 * KEY_BYTES + MAC_BYTES :]
        certificate = Certificate.parse(state.decrypt_and_hash(sealed_certificate))
        self.server_xonly = ellswift.decode(rs).to_bytes(32, "big")
        self.certificate = certificate
        certificate.check(self.server_xonly, self._authority, now)
        to_pool, from_pool = state.split()
        return Transport(send=to_pool, receive=from_pool)


class Responder:
    """The pool's side, for the test pool: act 1 in, act 2 out."""

    def __init__(
        self,
        static: EllSwiftKey,
        certificate: Certificate,
        *,
        ephemeral: EllSwiftKey | None = None,
    ) -> None:
        self._s = static
        self._certificate = certificate
        self._e = ephemeral or EllSwiftKey()

    def act2(self, act1: bytes) -> tuple[bytes, Transport]:
        if len(act1) != ACT1_BYTES:
            raise NoiseError(f"handshake opening must be {ACT1_BYTES} bytes, got {len(act1)}")
        state, e, s = _HandshakeState(), self._e, self._s
        state.mix_hash(act1)
        state.decrypt_and_hash(b"")
        state.mix_hash(e.encoded)
        state.mix_key(ellswift.v2_ecdh(e.private, act1, e.encoded, initiating=False))
        encrypted_static = state.encrypt_and_hash(s.encoded)
        state.mix_key(ellswift.v2_ecdh(s.private, act1, s.encoded, initiating=False))
        encrypted_certificate = state.encrypt_and_hash(self._certificate.encode())
        from_miner, to_miner = state.split()
        answer = e.encoded + encrypted_static + encrypted_certificate
        return answer, Transport(send=to_miner, receive=from_miner)


def _when(unix_s: float) -> str:
    moment = dt.datetime.fromtimestamp(max(0.0, min(unix_s, 253402300799.0)), dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
