"""Benchmarks: `tools/run bench` prints every figure on its own line with its unit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    goal: str = ""

    def line(self) -> str:
        goal = f"  (goal {self.goal})" if self.goal else ""
        return f"{self.name}: {self.value:.4g} {self.unit}{goal}"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; the p99 of a benchmark is a real observed value."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]
