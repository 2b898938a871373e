"""Drivers: bytes on a bus to typed values and back, with no policy and no loops of their own."""
