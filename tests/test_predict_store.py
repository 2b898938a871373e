"""Predictor state on disk and in memory, per module serial: kept across restarts and slot
moves, read back as untrusted input (a bad file costs its evidence, never a slot)."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from hashbay.agent.modules.predict import Predictor, PredictorState
from hashbay.agent.modules.predict_settings import PredictSettings
from hashbay.agent.modules.predict_store import MAX_FILE_BYTES, PredictorBook, PredictStore
from hashbay.tools.bench.predict_board import HOUR_S, StatisticalBoard

CHIPS = 126
SERIAL = "HB23-0042"


def warned_predictor() -> Predictor:
    """A predictor that has seen a chip age until it warned, and a while after."""
    board = StatisticalBoard(2, degrading={34: 0.1})
    predictor = Predictor(PredictSettings(), CHIPS, nominal_board_v=board.board_v)
    while not predictor.update(board.step(30.0)).degrading:
        pass
    for _ in range(40):
        predictor.update(board.step(30.0))
    return predictor


@pytest.fixture(scope="module")
def state() -> PredictorState:
    return warned_predictor().state()


def saved(tmp_path: Path, state: PredictorState) -> PredictStore:
    store = PredictStore(tmp_path)
    assert store.save(SERIAL, state)
    return store


def raw_json(store: PredictStore) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(store.path_for(SERIAL).read_text())
    return data


def rewrite(store: PredictStore, data: Any) -> None:
    store.path_for(SERIAL).write_text(json.dumps(data))


def test_a_saved_state_comes_back_as_it_was(tmp_path: Path, state: PredictorState) -> None:
    store = saved(tmp_path, state)
    loaded = store.load(SERIAL, CHIPS)
    assert loaded is not None
    assert loaded.hashing_s == state.hashing_s
    assert loaded.warning == state.warning
    assert loaded.announced == state.announced
    for mine, theirs in zip(loaded.windows, state.windows, strict=True):
        assert [list(p.errors) for p in mine.points] == [list(p.errors) for p in theirs.points]
        assert [list(p.reported) for p in mine.points] == [list(p.reported) for p in theirs.points]
        for a, b in zip(mine.points, theirs.points, strict=True):
            assert list(a.x_mhz) == pytest.approx(list(b.x_mhz), rel=1e-6)
    assert list(store.directory.iterdir()) == [store.path_for(SERIAL)]  # no temp left
    assert store.path_for(SERIAL).stat().st_size < 200_000


def test_a_restored_predictor_says_what_it_said_and_does_not_warn_again(
    tmp_path: Path, state: PredictorState
) -> None:
    store = saved(tmp_path, state)
    book = PredictorBook(PredictSettings(), store)
    predictor = book.take(SERIAL, CHIPS, 13.44)
    board = StatisticalBoard(9)
    prediction = predictor.update(board.step(30.0))
    assert prediction.degrading and prediction.chip == 34
    assert not predictor.newly_raised


def test_a_module_moved_between_slots_keeps_its_predictor(state: PredictorState) -> None:
    book = PredictorBook(PredictSettings(), None)
    first = book.take(SERIAL, CHIPS, 13.44)
    assert book.release(SERIAL) is not None
    assert book.take(SERIAL, CHIPS, 13.44) is first


def test_two_modules_claiming_one_serial_do_not_share_a_predictor() -> None:
    book = PredictorBook(PredictSettings(), None)
    first = book.take(SERIAL, CHIPS, 13.44)
    with capture_logs() as logs:
        second = book.take(SERIAL, CHIPS, 13.44)
    assert second is not first
    assert [entry["event"] for entry in logs] == [
        "another module claims this serial: its trends are not kept"
    ]


def test_state_is_due_for_saving_every_save_interval_of_hashing(tmp_path: Path) -> None:
    book = PredictorBook(PredictSettings(save_interval_s=900.0), PredictStore(tmp_path))
    predictor = book.take(SERIAL, CHIPS, 13.44)
    board = StatisticalBoard(4)
    due = []
    for _ in range(round(HOUR_S / 30)):
        predictor.update(board.step(30.0))
        due.append(book.due(SERIAL) is not None)
    assert sum(due) == 3  # at 15, 30 and 45 minutes of hashing (the first poll is a baseline)


def test_no_file_is_no_state_and_no_complaint(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert PredictStore(tmp_path).load(SERIAL, CHIPS) is None
    assert logs == []


def test_a_state_kept_under_other_settings_starts_afresh(
    tmp_path: Path, state: PredictorState
) -> None:
    store = saved(tmp_path, state)
    book = PredictorBook(PredictSettings(bucket_s=600.0), store)
    predictor = book.take(SERIAL, CHIPS, 13.44)
    assert predictor.hashing_s == 0.0


def _packed(body: bytes) -> str:
    return base64.b64encode(zlib.compress(body)).decode()


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(data: Any) -> Any:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data

    return change


def _reversed_points(data: Any) -> Any:
    data["windows"][0]["points"].reverse()
    return data


POINT = ("windows", 0, "points", 0)
HOSTILE: dict[str, Any] = {
    "another serial": _set(("serial",), "HB99-0001"),
    "another chip count": _set(("chip_count",), 42),
    "another schema": _set(("schema",), 2),
    "not an object": lambda data: [data],
    "negative hashing time": _set(("hashing_s",), -1.0),
    "a boolean for a number": _set(("hashing_s",), True),
    "a point after the end": lambda data: _set((*POINT, "end_s"), data["hashing_s"] + 1)(data),
    "points out of order": _reversed_points,
    "not base64": _set((*POINT, "errors"), "!!!"),
    "too few values": _set((*POINT, "errors"), _packed(b"\0" * 8)),
    "a zip bomb": _set((*POINT, "errors"), _packed(b"\0" * 10_000_000)),
    "more errors than nonces": _set((*POINT, "errors"), _packed(b"\xff\xff\xff\x7f" * CHIPS)),
    "a warning on a chip it does not have": _set(("warning", "chip"), CHIPS),
    "a falling warning": _set(("warning", "slope_per_h"), -1.0),
    "a step rate above one": _set(
        ("steps",), [{"chip": 1, "rate_before": 0.001, "rate_after": 1.5, "held_s": 0.0}]
    ),
    "a chip announced twice": _set(("announced",), [[3, 0.0], [3, 1.0]]),
    "too many windows": lambda data: _set(("windows",), data["windows"] * 3)(data),
}


@pytest.mark.parametrize("how", sorted(HOSTILE))
def test_a_hostile_file_is_dropped_with_one_log_line(
    tmp_path: Path, state: PredictorState, how: str
) -> None:
    store = saved(tmp_path, state)
    rewrite(store, HOSTILE[how](raw_json(store)))
    with capture_logs() as logs:
        assert store.load(SERIAL, CHIPS) is None
    assert [entry["event"] for entry in logs] == [
        "predictor state ignored; the module's evidence starts afresh"
    ]


def test_nan_and_infinity_are_not_numbers_here(tmp_path: Path, state: PredictorState) -> None:
    store = saved(tmp_path, state)
    text = store.path_for(SERIAL).read_text()
    store.path_for(SERIAL).write_text(text.replace('"hashing_s":', '"hashing_s":NaN,"x":', 1))
    with capture_logs() as logs:
        assert store.load(SERIAL, CHIPS) is None
    assert "NaN" in logs[0]["reason"]


def test_a_file_too_large_is_not_even_parsed(tmp_path: Path) -> None:
    store = PredictStore(tmp_path)
    store.directory.mkdir(parents=True)
    store.path_for(SERIAL).write_bytes(b" " * (MAX_FILE_BYTES + 1))
    with capture_logs() as logs:
        assert store.load(SERIAL, CHIPS) is None
    assert "larger than" in logs[0]["reason"]


def test_a_hostile_file_costs_the_evidence_not_the_slot(tmp_path: Path) -> None:
    store = PredictStore(tmp_path)
    store.directory.mkdir(parents=True)
    store.path_for(SERIAL).write_bytes(b"\x00garbage")
    predictor = PredictorBook(PredictSettings(), store).take(SERIAL, CHIPS, 13.44)
    assert predictor.hashing_s == 0.0
    assert not predictor.update(StatisticalBoard(1).step(30.0)).degrading


def test_an_odd_serial_cannot_reach_outside_the_store(
    tmp_path: Path, state: PredictorState
) -> None:
    store = PredictStore(tmp_path)
    assert store.save("../../etc/passwd", state)
    (written,) = store.directory.iterdir()
    assert written.parent == store.directory and written.name.startswith("serial-")


def test_an_unwritable_state_dir_is_logged_not_fatal(tmp_path: Path, state: PredictorState) -> None:
    (tmp_path / "predict").write_text("a file where the directory should be")
    with capture_logs() as logs:
        assert not PredictStore(tmp_path).save(SERIAL, state)
    assert logs[0]["event"] == "predictor state not saved"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=2000))
def test_any_bytes_at_all_never_crash_the_loader(tmp_path: Path, raw: bytes) -> None:
    store = PredictStore(tmp_path)
    store.directory.mkdir(parents=True, exist_ok=True)
    store.path_for(SERIAL).write_bytes(raw)
    with capture_logs():
        assert store.load(SERIAL, CHIPS) is None
