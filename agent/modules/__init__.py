"""Hashboard modules: the slot controller, the lifecycle table, health, prediction, protection."""
