"""`tools/run mutate [MODULE…]`: mutation testing of the safety core.

Prints per module mutants / killed / timed out / survived / equivalent and the score
(caught per 100 mutants that are not equivalent), then every survivor as file:line and
mutation. Exits 1 when a module scores below its minimum (targets.toml), or with
--strict when any mutant survives.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hashbay.tools.mutation.mutants import Mutant, mutants_of
from hashbay.tools.mutation.runner import (
    Equivalent,
    ModuleResult,
    Outcome,
    Runner,
    Target,
    load_equivalents,
    load_targets,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TARGETS = HERE / "targets.toml"
EQUIVALENTS = HERE / "equivalent.toml"


def select(targets: Sequence[Target], names: Sequence[str]) -> list[Target]:
    """Targets named by path or by a unique part of it ("pmbus", "bm13xx/crc")."""
    if not names:
        return list(targets)
    chosen: list[Target] = []
    for name in names:
        exact = [t for t in targets if t.module == name]
        matches = exact or [t for t in targets if name in t.module]
        if len(matches) != 1:
            known = ", ".join(t.module for t in targets)
            raise SystemExit(f"mutate: {name!r} names {len(matches)} modules; known: {known}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def plan_for(
    target: Target,
    source: bytes,
    equivalents: dict[tuple[str, str, str, int, str, int], Equivalent],
    sample: int | None,
    seed: str,
) -> tuple[list[Mutant], list[Mutant]]:
    """(mutants to run, mutants accepted as equivalent) for one module."""
    everything = mutants_of(target.module, source)
    equivalent = [m for m in everything if m.key in equivalents]
    candidates = [m for m in everything if m.key not in equivalents]
    if sample is not None and sample < len(candidates):
        candidates = random.Random(f"{seed}:{target.module}").sample(candidates, sample)
        candidates.sort(key=lambda m: (m.line, m.col, m.mutation))
        equivalent = []
    return candidates, equivalent


def report(results: Sequence[ModuleResult], elapsed_s: float) -> str:
    width = max(len(r.target.module) for r in results)
    head = ("mutants", "killed", "timed out", "survived", "equivalent", "score")
    lines = [f"{'module':<{width}}  " + "  ".join(f"{h:>10}" for h in head)]
    for r in results:
        counts = (
            len(r.outcomes),
            r.count(Outcome.KILLED),
            r.count(Outcome.TIMED_OUT),
            r.count(Outcome.SURVIVED),
            r.count(Outcome.EQUIVALENT),
        )
        cells = [f"{n:>10}" for n in counts] + [f"{r.score:>8.1f} %"]
        lines.append(f"{r.target.module:<{width}}  " + "  ".join(cells))
    lines.append(f"({elapsed_s:.0f} s)")
    survivors = [(r.target, m) for r in results for m in r.survivors]
    if survivors:
        lines.append("\nsurvivors (a test should fail; or, if no behaviour can change, add the")
        lines.append("mutant to tools/mutation/equivalent.toml with the reason):")
        for _, mutant in survivors:
            lines.append(f"  {mutant.where}: {mutant.mutation}    {mutant.code}")
    return "\n".join(lines)


def toml_entries(results: Sequence[ModuleResult]) -> str:
    """Survivors as equivalent.toml entries, to paste once the reason is written."""
    out = []
    for result in results:
        for m in result.survivors:
            out.append(
                "[[equivalent]]\n"
                f"module = {json.dumps(m.module)}\n"
                f"scope = {json.dumps(m.scope)}\n"
                f"code = {json.dumps(m.code, ensure_ascii=False)}\n"
                f"col = {m.col}\n"
                f"mutation = {json.dumps(m.mutation, ensure_ascii=False)}\n"
                + (f"occurrence = {m.occurrence}\n" if m.occurrence else "")
                + 'reason = ""\n'
            )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/run mutate", description=__doc__)
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all targets)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="workers")
    parser.add_argument("--sample", type=int, help="run only this many mutants per module")
    parser.add_argument("--seed", default="hashbay", help="which sample (deterministic)")
    parser.add_argument("--strict", action="store_true", help="fail on any survivor")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--toml", action="store_true", help="print survivors as TOML entries")
    args = parser.parse_args(argv)

    targets = select(load_targets(TARGETS), args.modules)
    equivalents = {e.key: e for e in load_equivalents(EQUIVALENTS)}
    plan = []
    accepted: dict[str, list[Mutant]] = {}
    sources = {t.module: (ROOT / t.module).read_bytes() for t in targets}
    for target in targets:
        run, equivalent = plan_for(
            target, sources[target.module], equivalents, args.sample, args.seed
        )
        plan.append((target, run))
        accepted[target.module] = equivalent
    if args.list:
        for _, mutants in plan:
            for m in mutants:
                print(f"{m.where}: {m.mutation}    {m.code}")
        return 0

    # SIGTERM unwinds like Ctrl-C: running tests are killed and the temporary trees removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()

    def progress(target: Target, mutant: Mutant, outcome: Outcome) -> None:
        if outcome is Outcome.SURVIVED:
            print(f"survived: {mutant.where}: {mutant.mutation}", file=sys.stderr, flush=True)

    results = Runner(ROOT, args.jobs, sources).run(plan, progress)
    for result in results:
        result.outcomes.extend((m, Outcome.EQUIVALENT) for m in accepted[result.target.module])
    elapsed = time.monotonic() - started
    print(report(results, elapsed))
    if args.toml:
        print("\n" + toml_entries(results))
    if args.json:
        args.json.write_text(json.dumps(_as_json(results, elapsed), indent=2) + "\n")
    failed = [r for r in results if r.score < r.target.min_score]
    for r in failed:
        print(f"mutate: {r.target.module} scores {r.score:.1f} % < {r.target.min_score:g} %")
    if args.strict and any(r.survivors for r in results):
        print("mutate: --strict and mutants survived")
        return 1
    return 1 if failed else 0


def _as_json(results: Sequence[ModuleResult], elapsed_s: float) -> dict[str, object]:
    return {
        "elapsed_s": round(elapsed_s, 1),
        "modules": {
            r.target.module: {
                "mutants": len(r.outcomes),
                **{o.value: r.count(o) for o in Outcome},
                "score": round(r.score, 1),
                "baseline_s": round(r.baseline_s, 2),
                "survivors": [f"{m.where}: {m.mutation}" for m in r.survivors],
            }
            for r in results
        },
    }


if __name__ == "__main__":
    sys.exit(main())
