"""The self-test's report for a person (a table, one row printed as each check ends) or
for a script (one JSON document)."""

from __future__ import annotations

import json

from hashbay.agent.selftest.report import Check, Report, Verdict

COLUMNS = (("PART", 10), ("CHECK", 28), ("RESULT", 6))
MARKS = {Verdict.PASS: "pass", Verdict.FAIL: "FAIL", Verdict.SKIP: "skip", Verdict.LOOK: "look"}


def header(report: Report) -> str:
    title = f"hashbay self-test: {report.name} ({report.config})"
    columns = "  ".join(name.ljust(width) for name, width in COLUMNS) + "  DETAIL"
    return f"{title}\n{columns}"


def row(check: Check) -> str:
    cells = (check.part, check.item, MARKS[check.verdict])
    fitted = [text.ljust(width) for text, (_, width) in zip(cells, COLUMNS, strict=True)]
    return "  ".join(fitted) + "  " + check.detail


def summary(report: Report) -> str:
    counts = report.counts()
    tally = ", ".join(f"{counts[str(v)]} {MARKS[v].lower()}" for v in Verdict)
    if report.ok:
        return f"PASSED ({tally})"
    failed = "; ".join(f"{c.part} {c.item}" for c in report.failures())
    return f"FAILED ({tally}): {failed}"


def table(report: Report) -> str:
    return "\n".join([header(report), *(row(c) for c in report.checks), summary(report)])


def as_json(report: Report) -> str:
    return json.dumps(report.as_json(), indent=2, ensure_ascii=False)
