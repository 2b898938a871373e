"""One temperature sensor's story, as health and protection read it: a failed read is
counted, a changed value starts the story afresh, and a value that holds while the
board's power moves far enough is marked (the first hint of a stuck sensor)."""

from __future__ import annotations

import pytest

from hashbay.agent.modules.sensor_track import PowerShare, PowerWatts, SensorTrack


def lost_since(track: SensorTrack) -> float | None:
    return track.unreadable_since_s


def test_a_new_sensor_is_unreadable_until_it_reads_and_counts_failed_reads_in_a_row() -> None:
    track = SensorTrack(0.0)
    assert track.unreadable_since_s == 0.0
    track.see(None, 1.0, None, PowerWatts(100))
    assert track.failed_reads == 1 and track.unreadable_since_s == 0.0
    track.see(None, 2.0, None, PowerWatts(100))
    assert track.failed_reads == 2
    track.see(60.0, 3.0, 1000.0, PowerWatts(100))
    assert track.failed_reads == 0
    assert lost_since(track) is None
    track.see(None, 4.0, 1000.0, PowerWatts(100))
    assert lost_since(track) == 4.0  # lost again from now, not from the start


def test_a_changed_value_starts_afresh_with_the_power_and_the_others_then() -> None:
    track = SensorTrack(0.0)
    track.see(60.0, 1.0, 1000.0, PowerWatts(100), others_c=58.0)
    track.see(60.0, 2.0, 1200.0, PowerWatts(100))
    moved_before = track.power_moved_s
    track.see(61.0, 3.0, 1300.0, PowerWatts(100), others_c=59.0)
    after = (track.value_c, track.since_s, track.power_ref_w, track.others_ref_c)
    assert moved_before == 2.0
    assert after == (61.0, 3.0, 1300.0, 59.0)
    assert track.power_moved_s is None


@pytest.mark.parametrize(("now_w", "moved"), [(1099.0, False), (1100.0, True), (900.0, True)])
def test_power_moving_by_the_watts_marks_a_held_value(now_w: float, moved: bool) -> None:
    track = SensorTrack(0.0)
    track.see(60.0, 1.0, 1000.0, PowerWatts(100))
    track.see(60.0, 2.0, now_w, PowerWatts(100))
    assert (track.power_moved_s == 2.0) is moved


@pytest.mark.parametrize(("now_w", "moved"), [(1099.0, False), (1100.0, True), (899.0, True)])
def test_power_moving_by_the_share_marks_a_held_value(now_w: float, moved: bool) -> None:
    track = SensorTrack(0.0)
    track.see(60.0, 1.0, 1000.0, PowerShare(0.1))
    track.see(60.0, 2.0, now_w, PowerShare(0.1))
    assert (track.power_moved_s == 2.0) is moved


def test_the_first_move_is_kept_until_the_value_changes() -> None:
    track = SensorTrack(0.0)
    track.see(60.0, 1.0, 1000.0, PowerWatts(100))
    track.see(60.0, 2.0, 1500.0, PowerWatts(100))
    track.see(60.0, 3.0, 2000.0, PowerWatts(100))
    assert track.power_moved_s == 2.0


def test_with_no_power_known_at_the_change_protection_takes_the_first_one_known() -> None:
    watts, share = SensorTrack(0.0), SensorTrack(0.0)
    for track, change in ((watts, PowerWatts(100)), (share, PowerShare(0.1))):
        track.see(60.0, 1.0, None, change)
        track.see(60.0, 2.0, 1000.0, change)
        track.see(60.0, 3.0, 1500.0, change)
    assert watts.power_ref_w == 1000.0 and watts.power_moved_s == 3.0
    assert share.power_ref_w is None and share.power_moved_s is None  # health: no reference


def test_a_share_of_no_power_is_never_a_move() -> None:
    track = SensorTrack(0.0)
    track.see(60.0, 1.0, 0.0, PowerShare(0.1))
    track.see(60.0, 2.0, 500.0, PowerShare(0.1))
    assert track.power_moved_s is None
