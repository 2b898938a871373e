"""One temperature sensor's recent story, for health and protection alike: whether it
reads, how many reads in a row failed, when its value last changed, and whether the
board's power (or its other sensors) moved while it did not — what tells a lost or a
stuck sensor from a live one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class PowerChange(Protocol):
    """How far the board's power must move, from what it drew when the sensor's value last
    changed, before a live sensor must have moved too."""

    @property
    def from_first_known(self) -> bool:
        """With no power known at the change, whether the first one known after is it."""

    def moved(self, reference_w: float, now_w: float) -> bool: ...


@dataclass(frozen=True)
class PowerShare:
    """A share of the reference power (health); no reference, no move."""

    share: float

    @property
    def from_first_known(self) -> bool:
        return False

    def moved(self, reference_w: float, now_w: float) -> bool:
        return bool(reference_w) and abs(now_w - reference_w) >= self.share * reference_w


@dataclass(frozen=True)
class PowerWatts:
    """Watts (protection)."""

    watts: float

    @property
    def from_first_known(self) -> bool:
        return True

    def moved(self, reference_w: float, now_w: float) -> bool:
        return abs(now_w - reference_w) >= self.watts


class SensorTrack:
    __slots__ = (
        "failed_reads",
        "others_ref_c",
        "power_moved_s",
        "power_ref_w",
        "since_s",
        "unreadable_since_s",
        "value_c",
    )

    def __init__(self, now_s: float) -> None:
        self.value_c: float | None = None
        self.since_s = now_s  # when the value last changed
        self.power_ref_w: float | None = None  # the board's power then
        self.others_ref_c: float | None = None  # the other sensors' mean then
        self.power_moved_s: float | None = None  # when power moved while the value did not
        self.unreadable_since_s: float | None = now_s
        self.failed_reads = 0  # in a row, since the last good one

    def see(
        self,
        reading_c: float | None,
        now_s: float,
        power_w: float | None,
        change: PowerChange,
        others_c: float | None = None,
    ) -> None:
        if reading_c is None:
            if self.unreadable_since_s is None:
                self.unreadable_since_s = now_s
            self.failed_reads += 1
            return
        self.unreadable_since_s = None
        self.failed_reads = 0
        if reading_c != self.value_c:
            self.value_c, self.since_s = reading_c, now_s
            self.power_ref_w, self.others_ref_c, self.power_moved_s = power_w, others_c, None
            return
        if power_w is None or self.power_moved_s is not None:
            return
        if self.power_ref_w is None:
            if change.from_first_known:
                self.power_ref_w = power_w
        elif change.moved(self.power_ref_w, power_w):
            self.power_moved_s = now_s
