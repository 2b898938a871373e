"""Mutation testing of the safety core: `tools/run mutate` (see __main__.py)."""
