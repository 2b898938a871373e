"""The canonical fault codes: every cause the agent can raise has exactly one stable code,
events carry it, and the CLI explains it without the agent."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path

import pytest

from hashbay.agent.core.events import Event, EventBus, EventKind
from hashbay.agent.core.fault_codes import (
    BY_CODE,
    CATALOG,
    CAUSE_NAMED_BY_RAISER,
    EVENT_KINDS,
    HEALTH_REASONS,
    INFORMATIONAL_KINDS,
    TIERS,
    Fault,
    Severity,
    for_health,
)
from hashbay.agent.core.status import Reason
from hashbay.agent.modules import health, health_board
from hashbay.agent.modules.protection import Tier
from hashbay.tools.cli import main as cli_main
from hashbay.tools.cli_render import event_line


def _health_reason_codes() -> set[str]:
    """Every `Reason("code", ...)` the health model can build, read from its source (the
    score's module and the board's conditions)."""
    sources = (Path(str(module.__file__)).read_text() for module in (health, health_board))
    trees = [ast.parse(source) for source in sources]
    codes = set()
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Reason":
            first = node.args[0]
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
                "a health reason's code must be a literal"
            )
            codes.add(first.value)
    return codes


def test_every_health_reason_has_a_code() -> None:
    reasons = _health_reason_codes()
    assert len(reasons) >= 15  # the scan found the health model's reasons
    assert reasons - set(HEALTH_REASONS) == set(), "health reasons without a fault code"
    assert set(HEALTH_REASONS) - reasons == set(), "codes for reasons the model never gives"


def test_every_protection_tier_but_ok_has_a_code() -> None:
    assert set(TIERS) == {t.value for t in Tier} - {Tier.OK.value}


def test_every_event_kind_is_coded_named_by_its_raiser_or_informational() -> None:
    groups = (set(EVENT_KINDS), set(CAUSE_NAMED_BY_RAISER), set(INFORMATIONAL_KINDS))
    for kind in EventKind:
        assert sum(kind.value in g for g in groups) == 1, f"{kind} needs exactly one home"
    assert set().union(*groups) == {k.value for k in EventKind}


def test_codes_and_names_are_unique_and_in_their_ranges() -> None:
    assert len(BY_CODE) == len(CATALOG) == len(Fault)
    assert len({c.name for c in CATALOG}) == len(CATALOG)
    for entry in CATALOG:
        assert 100 <= entry.code < 900 and re.fullmatch(r"[a-z_]+", entry.name)
        assert entry.meaning.endswith(".") and entry.action
    assert Fault.OVER_TEMP_CUT.severity is Severity.CRITICAL


def test_the_costliest_health_reason_names_the_fault() -> None:
    reasons = (Reason("hashrate_low", "slow", 10), Reason("chips_lost", "gone", 60))
    assert for_health(reasons, Fault.HASHRATE_LOW) is Fault.CHIPS_LOST
    assert for_health((), Fault.HASHRATE_LOW) is Fault.HASHRATE_LOW


def test_alarm_events_get_their_kinds_code_and_a_raisers_code_is_kept() -> None:
    bus = EventBus()
    inbox = bus.subscribe()
    bus.publish(Event(EventKind.BUS_NOISE, 1, "noisy"))
    bus.publish(Event(EventKind.THROTTLED, 1, "fan", details={"code": Fault.THROTTLED.code}))
    bus.publish(Event(EventKind.INSERTED, 1, "in"))
    noisy, throttled, inserted = (inbox.get_nowait() for _ in range(3))
    assert noisy.details["code"] == Fault.BUS_NOISE.code
    assert throttled.details["code"] == Fault.THROTTLED.code
    assert "code" not in inserted.details
    assert noisy.to_json()["details"]["code"] == 205


def test_cli_explains_a_code_without_the_agent(tmp_path: Path) -> None:
    out = io.StringIO()
    socket = str(tmp_path / "no-agent.sock")
    assert cli_main(["--socket", socket, "codes", "302"], out) == 0
    assert "302 rail_fault (critical)" in out.getvalue()
    out = io.StringIO()
    assert cli_main(["--socket", socket, "--json", "codes"], out) == 0
    assert [c["code"] for c in json.loads(out.getvalue())] == [c.code for c in CATALOG]


def test_cli_refuses_an_unknown_code(tmp_path: Path) -> None:
    out = io.StringIO()
    assert cli_main(["--socket", str(tmp_path / "x.sock"), "codes", "999"], out) != 0


@pytest.mark.parametrize(("code", "shown"), [(103, "[103 over_temp_cut]"), (999, "fault: hot")])
def test_event_lines_name_the_code(code: int, shown: str) -> None:
    line = event_line({"kind": "fault", "slot": 0, "message": "hot", "details": {"code": code}})
    assert shown in line
