"""Tuned profiles on disk: kept per serial, read back as untrusted input, never unsafe."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from hashbay.agent.tuning.autotune import BoardProfile, TunePoint
from hashbay.agent.tuning.tune_store import StoredProfile, TuneStore
from hashbay.drivers.envelope import BoardLimits

CHIPS = 4
LIMITS = BoardLimits(
    vout_min_v=11.0, vout_max_v=15.0, freq_min_mhz=50.0, freq_max_mhz=700.0, power_max_w=1800.0
)
TUNED_AT = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
MODEL = "HB-1368-4"


def point(board_v: float, freq_mhz: float, power_w: float) -> TunePoint:
    return TunePoint(
        board_v=board_v,
        freqs_mhz=tuple(freq_mhz + i for i in range(CHIPS)),
        power_w=power_w,
        hashrate_hs=freq_mhz * 1.276e9 * CHIPS,
        error_share=0.002,
        weak_chips=(2,),
    )


PROFILE = BoardProfile(
    chip_count=CHIPS,
    max_error=0.01,
    points=(point(12.0, 400.0, 30.0), point(13.0, 480.0, 40.0), point(14.0, 560.0, 52.0)),
    duration_s=3600.0,
)


def saved(tmp_path: Path, serial: str = "HB23-0042") -> TuneStore:
    store = TuneStore(tmp_path)
    assert store.save(serial, PROFILE, board_model=MODEL, tuned_at=TUNED_AT)
    return store


def load(store: TuneStore, serial: str = "HB23-0042", **changes: Any) -> StoredProfile | None:
    options: dict[str, Any] = {"chip_count": CHIPS, "limits": LIMITS, "board_model": MODEL}
    return store.load(serial, **(options | changes))


def test_a_saved_profile_comes_back_as_it_was(tmp_path: Path) -> None:
    store = saved(tmp_path)
    stored = load(store)
    assert stored == StoredProfile("HB23-0042", MODEL, TUNED_AT, PROFILE)
    assert list(store.directory.iterdir()) == [store.path_for("HB23-0042")]  # no temp left


def test_no_file_is_no_profile_and_no_complaint(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert load(TuneStore(tmp_path)) is None
    assert logs == []


def test_saving_again_replaces_the_profile(tmp_path: Path) -> None:
    store = saved(tmp_path)
    newer = BoardProfile(CHIPS, 0.005, PROFILE.points[:1], 1800.0)
    assert store.save("HB23-0042", newer, board_model=MODEL)
    stored = load(store)
    assert stored is not None
    assert stored.profile == newer
    assert stored.age_days() < 0.01


def test_age_decides_when_a_retune_is_due() -> None:
    stored = StoredProfile("s", MODEL, TUNED_AT, PROFILE)
    later = TUNED_AT + datetime.timedelta(days=31)
    assert stored.age_days(later) == pytest.approx(31.0)
    assert stored.stale(30.0, later)
    assert not stored.stale(0.0, later)  # 0: never
    assert not stored.stale(30.0, TUNED_AT + datetime.timedelta(days=29))
    assert stored.age_days(TUNED_AT - datetime.timedelta(days=5)) == 0.0  # clock set back


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"chip_count": CHIPS + 1}, "for 4 chips, this module has 5"),
        ({"board_model": "HB-1370-4"}, "tuned on a 'HB-1368-4'"),
    ],
)
def test_a_profile_for_another_kind_of_board_is_ignored_and_logged(
    tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    store = saved(tmp_path)
    with capture_logs() as logs:
        assert load(store, **changes) is None
    assert reason in logs[0]["reason"]
    assert logs[0]["serial"] == "HB23-0042"


def test_a_file_copied_from_another_serial_is_ignored(tmp_path: Path) -> None:
    store = saved(tmp_path)
    store.path_for("HB23-0043").write_bytes(store.path_for("HB23-0042").read_bytes())
    with capture_logs() as logs:
        assert load(store, "HB23-0043") is None
    assert "written for serial 'HB23-0042'" in logs[0]["reason"]


def test_points_outside_narrowed_limits_are_dropped_never_applied(tmp_path: Path) -> None:
    store = saved(tmp_path)
    narrower = BoardLimits(11.0, 13.5, 50.0, 700.0, 1800.0)
    with capture_logs() as logs:
        stored = load(store, limits=narrower)
    assert stored is not None
    assert [p.board_v for p in stored.profile.points] == [12.0, 13.0]
    assert logs[0]["dropped"] == 1
    slow = BoardLimits(11.0, 15.0, 50.0, 450.0, 1800.0)
    stored = load(store, limits=slow)
    assert stored is not None
    assert [p.board_v for p in stored.profile.points] == [12.0]
    with capture_logs() as logs:
        assert load(store, limits=BoardLimits(11.0, 15.0, 50.0, 700.0, 20.0)) is None
    assert "no point within the module's limits" in logs[0]["event"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe not utf-8",
        b"{",
        b"[]",
        b"null",
        b"[" * 100000,
        b'{"schema": 2}',
        b'{"schema": true}',
        b" " * (1 << 20) + b"{}",
    ],
)
def test_a_corrupt_file_is_ignored_with_a_clear_log_line(tmp_path: Path, body: bytes) -> None:
    store = TuneStore(tmp_path)
    store.directory.mkdir()
    store.path_for("HB23-0042").write_bytes(body)
    with capture_logs() as logs:
        assert load(store) is None
    assert logs[0]["event"] == "tune profile ignored; the module will be retuned"
    assert logs[0]["reason"]


def good_json() -> dict[str, Any]:
    return {
        "schema": 1,
        "serial": "HB23-0042",
        "board_model": MODEL,
        "tuned_at": TUNED_AT.isoformat(),
        "chip_count": CHIPS,
        "max_error": 0.01,
        "duration_s": 3600.0,
        "points": [
            {
                "board_v": 13.0,
                "freqs_mhz": [480.0] * CHIPS,
                "power_w": 40.0,
                "hashrate_hs": 2.4e12,
                "error_share": 0.001,
                "weak_chips": [],
            }
        ],
    }


def check_safe(stored: StoredProfile | None) -> None:
    """Whatever a file says, what is returned is a profile this module may run."""
    if stored is None:
        return
    assert stored.profile.chip_count == CHIPS
    assert stored.profile.points
    for p in stored.profile.points:
        assert LIMITS.vout_min_v <= p.board_v <= LIMITS.vout_max_v
        assert len(p.freqs_mhz) == CHIPS
        assert all(LIMITS.freq_min_mhz <= f <= LIMITS.freq_max_mhz for f in p.freqs_mhz)
        assert 0 < p.power_w <= LIMITS.power_max_w
        assert 0 <= p.error_share <= 1
        assert all(0 <= c < CHIPS for c in p.weak_chips)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
paths = st.sampled_from(
    [
        (),
        ("schema",),
        ("serial",),
        ("board_model",),
        ("tuned_at",),
        ("chip_count",),
        ("max_error",),
        ("duration_s",),
        ("points",),
        ("points", 0),
        ("points", 0, "board_v"),
        ("points", 0, "freqs_mhz"),
        ("points", 0, "freqs_mhz", 1),
        ("points", 0, "power_w"),
        ("points", 0, "hashrate_hs"),
        ("points", 0, "error_share"),
        ("points", 0, "weak_chips"),
    ]
)


def mutated(path: tuple[str | int, ...], value: Any) -> Any:
    data: Any = good_json()
    if not path:
        return value
    holder = data
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return data


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths, value=json_values)
def test_any_hostile_field_is_refused_or_harmless(
    tmp_path: Path, path: tuple[str | int, ...], value: Any
) -> None:
    store = TuneStore(tmp_path)
    store.directory.mkdir(exist_ok=True)
    store.path_for("HB23-0042").write_text(json.dumps(mutated(path, value)))
    check_safe(load(store))


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_any_bytes_at_all_never_crash_the_loader(tmp_path: Path, raw: bytes) -> None:
    store = TuneStore(tmp_path)
    store.directory.mkdir(exist_ok=True)
    store.path_for("HB23-0042").write_bytes(raw)
    check_safe(load(store))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("points", 0, "board_v"), 99.0),
        (("points", 0, "freqs_mhz", 1), 5000.0),
        (("points", 0, "power_w"), 1e5),
        (("points", 0, "freqs_mhz"), [480.0] * (CHIPS - 1)),
        (("points", 0, "weak_chips"), [CHIPS]),
        (("chip_count",), True),
        (("tuned_at",), "2026-05-01T12:00:00"),
        (("max_error",), 0),
    ],
)
def test_a_value_no_tuner_could_have_written_is_refused(
    tmp_path: Path, path: tuple[str | int, ...], value: Any
) -> None:
    store = TuneStore(tmp_path)
    store.directory.mkdir()
    store.path_for("HB23-0042").write_text(json.dumps(mutated(path, value)))
    assert load(store) is None
    store.path_for("HB23-0042").write_text(json.dumps(good_json()))
    assert load(store) is not None


def test_nan_and_infinity_are_not_numbers_here(tmp_path: Path) -> None:
    store = TuneStore(tmp_path)
    store.directory.mkdir()
    body = json.dumps(good_json()).replace('"power_w": 40.0', '"power_w": NaN')
    store.path_for("HB23-0042").write_text(body)
    with capture_logs() as logs:
        assert load(store) is None
    assert "NaN" in logs[0]["reason"]


def test_an_odd_serial_cannot_reach_outside_the_store(tmp_path: Path) -> None:
    store = TuneStore(tmp_path / "state")
    for serial in ("../../etc/passwd", "/abs", ".hidden", "a" * 200, "tab\there", ""):
        path = store.path_for(serial)
        assert path.parent == store.directory
        assert store.save(serial, PROFILE, board_model=MODEL)
        assert load(store, serial) is not None
    assert not (tmp_path / "etc").exists()


def test_an_unwritable_state_dir_is_logged_not_fatal(tmp_path: Path) -> None:
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state directory should be")
    with capture_logs() as logs:
        assert not TuneStore(blocked).save("HB23-0042", PROFILE, board_model=MODEL)
    assert logs[0]["event"] == "tune profile not saved"


@pytest.mark.parametrize("tuned_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_date_outside_what_a_clock_holds_is_refused_with_its_reason(
    tmp_path: Path, tuned_at: str
) -> None:
    store = TuneStore(tmp_path)
    store.directory.mkdir()
    store.path_for("HB23-0042").write_text(json.dumps(mutated(("tuned_at",), tuned_at)))
    with capture_logs() as logs:
        loaded = store.read("HB23-0042", chip_count=CHIPS, limits=LIMITS, board_model=MODEL)
    assert loaded.stored is None
    assert "out of range" in loaded.problem
    assert str(store.path_for("HB23-0042")) in loaded.problem
    assert [entry["event"] for entry in logs] == [
        "tune profile ignored; the module will be retuned"
    ]


def test_a_missing_file_is_no_problem_and_a_good_one_neither(tmp_path: Path) -> None:
    store = TuneStore(tmp_path)
    assert store.read("HB23-0042", chip_count=CHIPS, limits=LIMITS).problem == ""
    saved(tmp_path)
    loaded = store.read("HB23-0042", chip_count=CHIPS, limits=LIMITS, board_model=MODEL)
    assert loaded.stored is not None and loaded.problem == ""
