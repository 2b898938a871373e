"""Autotuning: the tuner, a live board as its target, profiles per serial."""
