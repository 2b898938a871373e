"""What a self-test found: one `Check` per thing looked at, each with a verdict and the
words a technician needs, plus plain numbers for scripts (`--json`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    SKIP = "skip"  # nothing there to test (an empty slot), or not safe to try after a failure
    LOOK = "look"  # done, but only a person can confirm it (an LED), or worth a second look


@dataclass(frozen=True)
class Check:
    part: str  # what is looked at: "gpio", "i2c", "psu", "slot 0", "fan 1", "chain 2", …
    item: str  # which line, address or measurement
    verdict: Verdict
    detail: str  # what was seen, and for a failure what to check
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "item": self.item,
            "verdict": str(self.verdict),
            "detail": self.detail,
            "data": dict(self.data),
        }


@dataclass
class Report:
    name: str  # agent.name from the config
    config: str  # where the config came from
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Passed: nothing failed (skips and things to look at do not fail a test)."""
        return not self.failures()

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.verdict is Verdict.FAIL]

    def counts(self) -> dict[str, int]:
        return {str(v): sum(c.verdict is v for c in self.checks) for v in Verdict}

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "ok": self.ok,
            "counts": self.counts(),
            "checks": [c.as_json() for c in self.checks],
        }
