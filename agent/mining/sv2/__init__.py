"""Stratum V2 mining: the Noise handshake, encrypted binary frames, one extended channel.

Layered so each part is pure and testable alone: `ellswift` (key encoding and ECDH),
`keys` (the pool's authority key as the URL carries it), `noise` (handshake, certificate,
cipher states), `framing` (headers, encrypted frames), `messages` (the mining protocol's
messages), `session` (one connection to one pool, the I/O on top of them all).
"""
